"""A campaign's MongoDB server: its URI with the password filled in, masked, and checked.

A campaign file shared with colleagues should not hold a password, so ``store:`` can name where
the password comes from (``password_env`` or ``password_file``); every URI that superionic
prints goes through :func:`mask_uri`. pymongo parses and validates URIs; this module only fills in
and hides the password, and turns "server not reachable" into one line naming the host and port.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from superionic.errors import SuperionicError, mask_uri

__all__ = ["check_reachable", "connection_uri", "host_port", "mask_uri", "password_of"]
REACH_TIMEOUT_MS = 5000


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


def check_reachable(uri: str, timeout_ms: int = REACH_TIMEOUT_MS) -> None:
    """Ping the server; raise one clear error naming host and port when it does not answer.

    ``SUPERIONIC_MONGO_TIMEOUT_S`` overrides how long to wait for an answer (default 5 s).

    Raises
    ------
    SuperionicError
        ``cannot reach the MongoDB server at HOST:PORT`` with what to check.
    """
    import pymongo
    from pymongo.errors import PyMongoError

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
    try:
        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms)
        client.admin.command("ping")
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
