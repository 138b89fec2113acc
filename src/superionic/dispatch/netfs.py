"""The embedded store on a network filesystem: one host only.

The embedded store serialises writers with ``flock``. On NFS, Lustre, GPFS and similar
filesystems ``flock`` between processes on *different* nodes is unreliable or silently local, so
two nodes writing one journal can interleave and lose updates. Workers on one node are safe (the
lock is taken on that node's kernel). So on a network filesystem each worker writes its host into
``<store>/worker_hosts`` (removed when it exits) and a worker from a second host is refused while
the first host's workers run, pointing to the MongoDB store that multi-node campaigns need.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from superionic.errors import SuperionicError

NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "lustre",
        "gpfs",
        "cifs",
        "smb3",
        "smbfs",
        "beegfs",
        "cephfs",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.sshfs",
        "afs",
        "panfs",
        "wekafs",
        "fuse.beegfs",
    }
)
#: a host entry older than this no longer counts (its workers have long finished)
HOST_ENTRY_TTL_S = 7 * 24 * 3600.0


def filesystem_type(path: Path, mounts: Path = Path("/proc/mounts")) -> str:
    """Return the type of the filesystem holding ``path`` (longest mount point prefix), or ``""``."""
    target = os.path.realpath(path)
    best, kind = "", ""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:  # not Linux
        return ""
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/") or point == "/"
        if inside and len(point) >= len(best):
            best, kind = point, parts[2]
    return kind


def register_worker_host(store_root: Path, fs_type: str | None = None, host: str | None = None) -> None:
    """Record this worker's host; refuse a second host when the store is on a network filesystem.

    Raises
    ------
    SuperionicError
        Naming the filesystem, the other host and the URI store to use instead.
    """
    store_root.mkdir(parents=True, exist_ok=True)
    kind = filesystem_type(store_root) if fs_type is None else fs_type
    if kind not in NETWORK_FILESYSTEMS:
        return
    host = host or socket.gethostname()
    path = store_root / "worker_hosts"
    now = time.time()
    others = set()
    for name, _pid, stamp in _entries(path):
        if name != host and now - stamp < HOST_ENTRY_TTL_S:
            others.add(name)
    if others:
        raise SuperionicError.single(
            "store",
            f"the embedded store is on a network filesystem ({kind}) where file locks do not work "
            f"between nodes, and workers on {', '.join(sorted(others))} already use it",
            str(store_root),
            "workers on one host only, or a MongoDB store for several nodes (store: {uri: mongodb://...}, "
            f"see the README); delete {path} once the other host's workers have finished",
        )
    with open(path, "a") as fh:
        fh.write(f"{host} {os.getpid()} {now:.0f}\n")


def unregister_worker_host(store_root: Path, host: str | None = None, pid: int | None = None) -> None:
    """Remove this worker's entry (at exit), so a later allocation on another node may use the store."""
    path = store_root / "worker_hosts"
    if not path.is_file():
        return
    me = (host or socket.gethostname(), pid or os.getpid())
    keep = [f"{n} {p} {s:.0f}\n" for n, p, s in _entries(path) if (n, p) != me]
    tmp = path.with_name(f"worker_hosts.{os.getpid()}.tmp")
    tmp.write_text("".join(keep))
    tmp.replace(path)


def _entries(path: Path) -> list[tuple[str, int, float]]:
    """``(host, pid, time)`` lines of the hosts file (malformed lines skipped)."""
    out = []
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = line.split()
            try:
                out.append((parts[0], int(parts[1]), float(parts[2])))
            except (IndexError, ValueError):
                continue
    return out
