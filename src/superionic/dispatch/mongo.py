"""A campaign's MongoDB server: its URI with the password filled in, masked, and checked.

A campaign file shared with colleagues should not hold a password, so ``store:`` can name where
the password comes from (``password_env`` or ``password_file``); every URI that superionic
prints goes through :func:`mask_uri`. pymongo parses and validates URIs; this module only fills in
and hides the password, and turns "server not reachable" into one line naming the host and port.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from pymongo.monitoring import ServerListener

from superionic.errors import SuperionicError, mask_uri

__all__ = [
    "check_reachable",
    "client_kwargs",
    "connection_uri",
    "host_port",
    "mask_uri",
    "password_of",
    "ride_out_outages",
]
REACH_TIMEOUT_MS = 5000
WORKER_SERVER_WAIT_S = 600.0  # a worker waits this long for a server that stopped answering

#: keyword arguments of every MongoClient this process opens for the campaign (LaunchPad, job
#: store, blobs, states); :func:`ride_out_outages` sets them in a worker
_CLIENT_KWARGS: dict[str, Any] = {}


def client_kwargs() -> dict[str, Any]:
    """Return the MongoClient keyword arguments of this process (empty: pymongo's defaults)."""
    return dict(_CLIENT_KWARGS)


def ride_out_outages(wait_s: float = WORKER_SERVER_WAIT_S) -> None:
    """Make this process's clients wait out a server that stops answering, and say so.

    pymongo already retries: an operation waits ``serverSelectionTimeoutMS`` (30 s by default)
    for a server to come back, and a write interrupted by a dropped connection is retried once.
    A worker mid-campaign should not die because the server restarted (a 10 s stop loses nothing
    and runs nothing twice; see tests/test_mongodb.py), so here every client of the worker waits
    up to ``wait_s`` per operation, and one line goes to stdout when the server stops answering
    and one when it answers again (pymongo's monitoring events; silent otherwise: the worker
    would look hung).
    """
    from pymongo import monitoring

    global _REPORTER
    _CLIENT_KWARGS["serverSelectionTimeoutMS"] = int(1000 * wait_s)
    if _REPORTER is None:  # pymongo keeps registered listeners for the process: register once
        _REPORTER = _OutageReporter(wait_s)
        monitoring.register(_REPORTER)
    _REPORTER.wait_s = wait_s


class _OutageReporter(ServerListener):
    """A pymongo server listener: one line per server when it goes down and when it is back.

    Every client of the process (LaunchPad, job store, blobs, states) monitors the server on its
    own; the lines are de-duplicated per address across them, and a server back within
    ``QUIET_S`` (one client saw a connection reset while another still had an answer) is not
    reported at all.
    """

    QUIET_S = 2.0

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self.down: dict[str, tuple[float, threading.Timer | None]] = {}  # since, pending report
        self.lock = threading.Lock()

    def opened(self, event: Any) -> None:
        """Nothing to say when a client starts monitoring a server."""

    def closed(self, event: Any) -> None:
        """Nothing to say when a client stops monitoring a server."""

    def description_changed(self, event: Any) -> None:
        """Note a server that became unknown (down) or known (back)."""
        from pymongo.server_type import SERVER_TYPE

        address = "{}:{}".format(*event.server_address)
        unknown = event.new_description.server_type == SERVER_TYPE.Unknown
        with self.lock:
            if unknown and address not in self.down:
                error = str(event.new_description.error or "no answer").split(" (configured timeouts")[0]
                timer = threading.Timer(self.QUIET_S, self._report_down, (address, error))
                timer.daemon = True
                self.down[address] = (time.time(), timer)
                timer.start()
            elif not unknown and address in self.down:
                since, pending = self.down.pop(address)
                if pending is not None:  # back before anything was said: say nothing
                    pending.cancel()
                else:
                    _say(f"MongoDB server {address} answers again after {time.time() - since:.0f} s")

    def _report_down(self, address: str, error: str) -> None:
        with self.lock:
            if address not in self.down:
                return
            self.down[address] = (self.down[address][0], None)
        _say(
            f"MongoDB server {address} is not answering ({mask_uri(error)}); waiting up to "
            f"{self.wait_s:.0f} s per operation (worker --server-wait)"
        )


_REPORTER: _OutageReporter | None = None


def _say(text: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} worker: {text}", file=sys.stdout, flush=True)


def password_of(store: Any) -> str | None:
    """Return the password the store spec names (``password_env`` or ``password_file``), if any.

    Raises
    ------
    SuperionicError
        Naming the field and what is missing (an unset variable, an unreadable or empty file).
    """
    if getattr(store, "password_env", None):
        value = os.environ.get(store.password_env)
        if not value:
            raise SuperionicError.single(
                "store.password_env",
                "the environment variable is not set",
                store.password_env,
                f"export {store.password_env}=... before running, or use store.password_file",
            )
        return value
    if getattr(store, "password_file", None):
        path = Path(store.password_file).expanduser()
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise SuperionicError.single(
                "store.password_file",
                f"cannot read it ({exc.strerror or exc})",
                str(path),
                "a file holding only the password (chmod 600)",
            ) from None
        if not value:
            raise SuperionicError.single(
                "store.password_file", "the file is empty", str(path), "a file holding only the password"
            )
        return value
    return None


def connection_uri(store: Any) -> str:
    """Return the URI to connect with: the spec's URI, with the password from env/file inserted."""
    uri: str = store.uri
    password = password_of(store)
    if password is None:
        return uri
    match = re.match(r"(mongodb(?:\+srv)?://)([^:@/]+)(?::[^@/]*)?@(.*)", uri)
    if match is None:
        raise SuperionicError.single(
            "store.uri",
            "a password is given (password_env/password_file) but the URI names no user",
            mask_uri(uri),
            "mongodb://USER@HOST:PORT/DATABASE",
        )
    scheme, user, rest = match.groups()
    return f"{scheme}{user}:{quote_plus(password)}@{rest}"


def host_port(uri: str) -> str:
    """Return the ``host:port`` list of a URI as written (no DNS lookup), for messages."""
    hosts = uri.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].rsplit("@", 1)[-1]
    default = "" if uri.startswith("mongodb+srv://") else ":27017"
    return ", ".join(h if ":" in h or not default else h + default for h in hosts.split(","))


def check_reachable(uri: str, timeout_ms: int = REACH_TIMEOUT_MS, database: str | None = None) -> None:
    """Ping the server and read the campaign's database; one clear error if either fails.

    ``SUPERIONIC_MONGO_TIMEOUT_S`` overrides how long to wait for an answer (default 5 s). The
    read (``listCollections`` on ``database``, else the URI's database, else ``superionic``)
    needs the user's rights, so wrong credentials or a missing user are told here, not as a
    traceback from the first write.

    Raises
    ------
    SuperionicError
        ``cannot reach the MongoDB server at HOST:PORT``, or that the server refused the
        credentials or requires them, with what to check.
    """
    import pymongo
    from pymongo.errors import OperationFailure, PyMongoError

    if os.environ.get("SUPERIONIC_MONGO_TIMEOUT_S"):  # a slow network, or a test's closed port
        try:
            timeout_ms = int(1000 * float(os.environ["SUPERIONIC_MONGO_TIMEOUT_S"]))
        except ValueError:
            raise SuperionicError.single(
                "SUPERIONIC_MONGO_TIMEOUT_S",
                "not a number",
                os.environ["SUPERIONIC_MONGO_TIMEOUT_S"],
                "seconds, e.g. 5",
            ) from None
    client: pymongo.MongoClient | None = None
    name = database or "superionic"
    try:
        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms)
        client.admin.command("ping")
        db = client[database] if database else client.get_default_database(default="superionic")
        name = db.name
        db.list_collection_names()
    except OperationFailure as exc:
        raise _refused(uri, name, exc) from None
    except (PyMongoError, ValueError) as exc:
        reason = str(exc).split(",")[0].split(" (configured timeouts")[0]
        raise SuperionicError.single(
            "store.uri",
            f"cannot reach the MongoDB server at {host_port(uri)} ({mask_uri(reason)})",
            mask_uri(uri),
            "a server this machine can reach: compute nodes often cannot reach a server on the login "
            "node; check the host, port and firewall, or run the workers where the server is reachable",
        ) from None
    finally:
        if client is not None:
            client.close()


def _refused(uri: str, database: str, exc: Any) -> SuperionicError:
    """Return the one-line error of a server that answered but refused (credentials, rights)."""
    match = re.match(r"mongodb(?:\+srv)?://([^:@/]+)(?::[^@/]*)?@", uri)
    user = match.group(1) if match else None
    where = f"the MongoDB server at {host_port(uri)}"
    if exc.code == 18:  # AuthenticationFailed
        why = f"{where} refused the credentials of user {user}"
        valid = "the user's password (store.password_env or store.password_file) and authSource in the URI"
    elif exc.code == 13:  # Unauthorized
        who = f"user {user}" if user else "a client without a user (none in the URI)"
        why = f"{where} does not let {who} read database {database}"
        valid = "mongodb://USER@HOST:PORT/DATABASE, the password from store.password_env, readWrite on it"
    else:
        why = f"{where} answered: {mask_uri(str(exc).split(', full error')[0])}"
        valid = "a user and database this server accepts"
    return SuperionicError.single("store.uri", why, mask_uri(uri), valid)
