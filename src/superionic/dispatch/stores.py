"""Stores: the embedded default (mongomock persisted to files) and MongoDB by URI.

Embedded mode
-------------
FireWorks' stock mongomock persistence loads a file when a client starts and writes it back when
the process exits, without locking: concurrent processes lose each other's updates. Here every
collection is an append-only journal (one JSON line per write operation) next to an in-memory
mongomock collection:

* a write takes an exclusive ``flock`` on ``<file>.lock``, first replays what other processes
  appended since this process last looked, applies the operation, appends one line, flushes and
  fsyncs, then releases the lock: load-modify-write is atomic across processes and cost is
  linear in the number of operations;
* a read replays new complete lines (no lock needed: lines are appended whole under the lock);
* compaction rewrites the journal as a snapshot into a temporary file and ``os.replace``-s it,
  so the file on disk always parses; other processes notice the new inode and reload.

Large arrays (trajectories) go to :class:`BlobDirStore`: one gzipped JSON file per blob, and
only a small metadata line in the journal. Job documents reference blobs by ``blob_uuid``
(jobflow's additional-store mechanism), so they stay far below MongoDB's 16 MB limit.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bson import ObjectId
from maggma.stores import MemoryStore
from monty.json import jsanitize

JOURNAL_SUFFIX = ".jsonl"


def _sanitize(doc: Any) -> Any:
    return jsanitize(doc, strict=False, allow_bson=False, enum_values=True, recursive_msonable=True)


def read_new_lines(path: Path, offset: int, inode: int | None) -> tuple[list[bytes], int, int | None, bool]:
    """Complete lines appended to a journal since ``offset``.

    Returns ``(lines, new_offset, inode, reset)``; ``reset`` is True when the file was replaced
    (compacted) or truncated by another process, in which case ``lines`` start from the top and the
    caller must drop what it holds first. A trailing partial line (a writer mid-append) is left.
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        return [], offset, inode, False
    reset = inode is not None and (stat.st_ino != inode or stat.st_size < offset)
    if reset:
        offset = 0
    if stat.st_size == offset:
        return [], offset, stat.st_ino, reset
    with open(path, "rb") as fh:
        fh.seek(offset)
        chunk = fh.read()
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], offset, stat.st_ino, reset
    return [ln for ln in chunk[: end + 1].splitlines() if ln.strip()], offset + end + 1, stat.st_ino, reset


def _hashable(values: tuple) -> bool:
    return all(not isinstance(v, (list, dict)) for v in values) and _try_hash(values)


def _try_hash(values: tuple) -> bool:
    try:
        hash(values)
    except TypeError:
        return False
    return True


class JournalStore(MemoryStore):
    """A maggma store held in mongomock and persisted to an append-only journal file.

    Safe for several processes at once (see the module docstring).

    Parameters
    ----------
    path : str or Path
        The journal file (``*.jsonl``); created on first write.
    collection_name : str
        Name of the in-memory collection.
    compact_every : int
        Rewrite the journal as a snapshot when it holds more than this many lines and more
        than twice as many lines as documents.

    """

    def __init__(
        self,
        path: str | Path,
        collection_name: str | None = None,
        compact_every: int = 5000,
        **kwargs: Any,
    ) -> None:
        self.path = Path(path)
        self.compact_every = compact_every
        super().__init__(collection_name=collection_name or self.path.stem, **kwargs)
        self._offset = 0
        self._inode: int | None = None
        self._lines = 0
        self._key_ids: dict[tuple[str, ...], dict[tuple, Any] | None] = {}
        self.kwargs = {"path": str(path), "collection_name": collection_name, **kwargs}

    # -- maggma plumbing ------------------------------------------------------------------
    def connect(self, force_reset: bool = False) -> None:
        """Open the in-memory collection and replay the journal."""
        if self._coll is None or force_reset:
            super().connect(force_reset=True)
            self._key_ids = {}
            self._offset = 0
            self._inode = None
            self._lines = 0
        self._catch_up()

    @property
    def _collection(self):  # type: ignore[override]
        if self._coll is None:
            self.connect()
        else:
            self._catch_up()
        return self._coll

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JournalStore) and self.path == other.path

    def __hash__(self) -> int:
        return hash(("JournalStore", str(self.path)))

    # -- journal --------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(str(self.path) + ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _apply(self, entry: dict) -> None:
        coll = self._coll
        if entry["op"] == "upsert":
            key = entry["key"]
            fields = tuple(key) if isinstance(key, list) else (key,)
            for doc in entry["docs"]:
                if not self._upsert_by_key(fields, doc):
                    coll.replace_one({k: doc.get(k) for k in fields}, doc, upsert=True)
                    self._key_ids.clear()
        elif entry["op"] == "insert":
            docs = [dict(doc) for doc in entry["docs"]]
            coll.insert_many(docs)
            self._index_new(docs)
        elif entry["op"] == "remove":
            coll.delete_many(entry["criteria"])
            self._key_ids.clear()
        elif entry["op"] == "reset":
            coll.delete_many({})
            self._key_ids.clear()
        self._lines += 1

    def _upsert_by_key(self, fields: tuple[str, ...], doc: dict) -> bool:
        """Replace or insert ``doc`` by its key values through a dict of key -> ``_id``.

        mongomock's ``replace_one`` scans and copies every document, which made replaying a
        journal (every process does, on every catch-up) quadratic in the number of jobs: 12 ms per
        line at 40 jobs. Returns False where a key is dotted or a key value anywhere is a list or
        a dict (MongoDB matches those by element): the caller falls back to ``replace_one``.
        """
        values = tuple(doc.get(k) for k in fields)
        if any("." in k for k in fields) or not _hashable(values):
            return False
        if fields not in self._key_ids:
            self._key_ids[fields] = self._index_of(fields, self._coll._store.documents)
        ids = self._key_ids[fields]
        if ids is None:
            return False
        object_id = ids.get(values)
        if object_id is None:
            object_id = ObjectId()
            self._index_new([{**doc, "_id": object_id}])
        else:  # indexes by other keys may now point at a document that no longer matches
            self._key_ids = {fields: ids}
        self._coll._store[object_id] = {**doc, "_id": object_id}
        return True

    @staticmethod
    def _index_of(fields: tuple[str, ...], docs: Iterable[dict]) -> dict[tuple, Any] | None:
        ids: dict[tuple, Any] = {}
        for doc in docs:
            values = tuple(doc.get(k) for k in fields)
            if not _hashable(values):
                return None
            ids.setdefault(values, doc["_id"])
        return ids

    def _index_new(self, docs: list[dict]) -> None:
        """Add inserted documents to the key indexes built so far."""
        for fields, ids in list(self._key_ids.items()):
            if ids is not None:
                new = self._index_of(fields, docs)
                self._key_ids[fields] = None if new is None else {**new, **ids}

    def _catch_up(self) -> None:
        if self._coll is None:
            return
        lines, self._offset, self._inode, reset = read_new_lines(self.path, self._offset, self._inode)
        if reset:  # compacted or replaced by another process: reload from scratch
            self._coll.delete_many({})
            self._key_ids.clear()
            self._lines = 0
        for line in lines:
            self._apply(json.loads(line))

    def _append(self, entry: dict) -> None:
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with open(self.path, "ab") as fh:
            # a previous writer killed mid-line leaves a fragment: cut it off first
            if fh.tell() > self._offset:
                fh.truncate(self._offset)
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._offset += len(line)
        if self._inode is None:
            self._inode = self.path.stat().st_ino

    def _write(self, entry: dict) -> None:
        if self._coll is None:
            self.connect()
        with self._locked():
            self._catch_up()
            self._apply(entry)
            self._append(entry)
            n_docs = self._coll.count_documents({})
            if self._lines > self.compact_every and self._lines > 2 * n_docs:
                self._compact()

    def _compact(self) -> None:
        """Rewrite the journal as one snapshot line per document (call with the lock held)."""
        docs = [{k: v for k, v in d.items() if k != "_id"} for d in self._coll.find({})]
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "wb") as fh:
            for doc in docs:
                entry = {"op": "insert", "docs": [doc]}
                fh.write((json.dumps(entry, separators=(",", ":")) + "\n").encode())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        stat = self.path.stat()
        self._inode, self._offset, self._lines = stat.st_ino, stat.st_size, len(docs)

    # -- public write API -----------------------------------------------------------------
    def update(self, docs: list[dict] | dict, key: list | str | None = None) -> None:
        """Upsert documents (by ``key``, default the store's key) and journal the write."""
        if not isinstance(docs, list):
            docs = [docs]
        if not docs:
            return
        clean = [_sanitize(d) for d in docs]
        for d in clean:
            d.pop("_id", None)
        self._write({"op": "upsert", "key": key or self.key, "docs": clean})

    def remove_docs(self, criteria: dict) -> None:
        """Remove the documents matching ``criteria`` and journal the removal."""
        self._write({"op": "remove", "criteria": _sanitize(criteria)})


class BlobDirStore(JournalStore):
    """Additional store for large objects: one gzipped JSON file per blob.

    Only metadata (``blob_uuid``, ``job_uuid``, ``job_index``, file name) lives in the journal;
    ``data`` is read from ``<directory>/<blob_uuid>.json.gz`` when a query asks for it.
    """

    def __init__(self, directory: str | Path, **kwargs: Any) -> None:
        self.directory = Path(directory)
        super().__init__(self.directory / ("index" + JOURNAL_SUFFIX), collection_name="blobs", **kwargs)
        self.key = "blob_uuid"
        self.kwargs = {"directory": str(directory), **kwargs}

    def update(self, docs: list[dict] | dict, key: list | str | None = None) -> None:
        """Write each blob's ``data`` to its own file, then journal the metadata."""
        if not isinstance(docs, list):
            docs = [docs]
        self.directory.mkdir(parents=True, exist_ok=True)
        meta = []
        for doc in docs:
            doc = dict(doc)
            data = doc.pop("data", None)
            name = f"{doc['blob_uuid']}.json.gz"
            tmp = self.directory / (name + ".tmp")
            with gzip.open(tmp, "wt") as fh:
                json.dump(_sanitize(data), fh)
            os.replace(tmp, self.directory / name)
            doc["file"] = name
            meta.append(doc)
        super().update(meta, key=key or "blob_uuid")

    def query(
        self,
        criteria: dict | None = None,
        properties: dict | list | None = None,
        sort: dict | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> Iterator[dict]:
        """Query metadata; load ``data`` from its file when requested."""
        want_data = properties is None or "data" in (
            properties if isinstance(properties, list) else list(properties)
        )
        props = properties
        if isinstance(properties, list):
            props = [p for p in properties if p != "data"] + ["file"]
        for doc in super().query(criteria=criteria, properties=props, sort=sort, skip=skip, limit=limit):
            if want_data and "file" in doc:
                with gzip.open(self.directory / doc["file"], "rt") as fh:
                    doc["data"] = json.load(fh)
            yield doc

    def remove_docs(self, criteria: dict) -> None:
        """Remove blobs and their files."""
        for doc in super().query(criteria=criteria, properties=["file"]):
            (self.directory / doc["file"]).unlink(missing_ok=True)
        super().remove_docs(criteria)
