"""An embedded FireWorks LaunchPad that is safe for concurrent processes.

FireWorks' stock mongomock mode loads a file when a client starts and writes it back when it
exits: two workers lose each other's updates, run fireworks twice, and corrupt the file. Here the
LaunchPad's database is a :class:`JournalDatabase`: each collection is an in-memory mongomock
collection backed by an append-only journal (``<dir>/<collection>.jsonl``, BSON extended JSON),
and every write runs under one exclusive ``flock`` for the whole database:

1. catch up with the lines other processes appended,
2. apply the operation to the in-memory collection,
3. append the full new state of every document it touched (or their deletion), flush, fsync.

So each LaunchPad operation (``find_one_and_update`` of a checkout, the fw id counter, the
workflow lock) is atomic across processes, exactly as on a MongoDB server, and a reader only ever
replays whole lines. A writer killed mid-line leaves a fragment that the next writer cuts off.
Indexes are not built in mongomock (its unique-index check scans every document, which made
inserts quadratic); FireWorks' ids come from its atomic counter, so nothing relies on them.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mongomock
from bson import ObjectId, json_util
from fireworks import LaunchPad
from pymongo import ReturnDocument

from superionic.dispatch.stores import read_new_lines

_OPTS = json_util.JSONOptions(json_mode=json_util.JSONMode.CANONICAL, tz_aware=False)


def _simple_inclusion(fields: Any) -> bool:
    """Tell whether a projection only includes top-level fields (``{"a": 1, "_id": 0}``, ``{"_id": 1}``)."""
    if not isinstance(fields, dict) or not fields or fields.get("_id", 1) not in (0, 1):
        return False  # (True and False compare equal to 1 and 0)
    included = [k for k in fields if k != "_id"]
    if not included and not fields.get("_id", 1):
        return False
    return all(
        isinstance(k, str)
        and "." not in k
        and not k.startswith("$")
        and fields[k] is not False
        and fields[k] == 1
        for k in included
    )


_IMMUTABLE = (str, int, float, bool, type(None), bytes, datetime.datetime, ObjectId)


def _copy_doc(obj: Any) -> Any:
    """Copy a BSON-like document: new dicts and lists, immutable leaves shared."""
    kind = type(obj)
    if kind is dict:
        return {k: _copy_doc(v) for k, v in obj.items()}
    if kind is list:
        return [_copy_doc(v) for v in obj]
    if kind in _IMMUTABLE:
        return obj
    return mongomock.collection._copy_field(obj, dict)


def _fast_projection(copy_only_fields: Callable[[dict, Any, Any], dict]) -> Callable[[dict, Any, Any], dict]:
    """Return mongomock's document copy for query results, three to ten times faster.

    mongomock copies every leaf with ``copy.copy`` and, for a projection, copies the whole document
    before deleting what the projection leaves out. FireWorks' checkout asks many ``{"fw_id": 1,
    "spec": 1}`` projections and whole documents that each hold a jobflow job, so a worker spent
    more time copying than running its job. Whole documents and plain top-level inclusions are
    copied here (the same result); anything else goes to mongomock.
    """

    def copy(doc: dict, fields: Any, container: Any) -> dict:
        if container is not dict:
            return copy_only_fields(doc, fields, container)
        if fields is None or (isinstance(fields, dict) and not fields):  # pymongo 4: {} is everything
            return _copy_doc(doc)
        if not _simple_inclusion(fields):
            return copy_only_fields(doc, fields, container)
        keys = [k for k in fields if k != "_id" and k in doc]
        if fields.get("_id", 1) and "_id" in doc:
            keys.insert(0, "_id")
        return {k: _copy_doc(doc[k]) for k in keys}

    return copy


class JournalCollection:
    """The subset of a pymongo ``Collection`` that FireWorks' LaunchPad uses, journaled."""

    def __init__(self, db: JournalDatabase, name: str) -> None:
        self.db = db
        self.name = name
        self.full_name = f"{db.name}.{name}"
        self.path = db.root / f"{name}.jsonl"
        self._coll = db._client[db.name][name]
        self._coll._copy_only_fields = _fast_projection(self._coll._copy_only_fields)
        self._offset = 0
        self._inode: int | None = None

    # -- journal -------------------------------------------------------------------------
    def _catch_up(self) -> None:
        lines, self._offset, self._inode, reset = read_new_lines(self.path, self._offset, self._inode)
        if reset:
            self._coll.delete_many({})
        for line in lines:
            self._apply(json_util.loads(line, json_options=_OPTS))

    def _apply(self, entry: dict) -> None:
        # replay straight into mongomock's document map: O(1) per document (its replace_one
        # scans the whole collection, which made reloading a 10,000-firework pad quadratic)
        store = self._coll._store
        for doc in entry.get("put", []):
            store[doc["_id"]] = doc
        for doc_id in entry.get("del", []):
            if doc_id in store:
                del store[doc_id]

    def _append(self, entry: dict) -> None:
        line = (json_util.dumps(entry, json_options=_OPTS) + "\n").encode()
        with open(self.path, "ab") as fh:
            if fh.tell() > self._offset:  # a writer killed mid-line: cut its fragment
                fh.truncate(self._offset)
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._offset += len(line)
        if self._inode is None:
            self._inode = self.path.stat().st_ino

    def _write(self, ids_of: Callable[[], list], op: Callable[[], Any], deleting: bool = False) -> Any:
        """Run an update/replace/delete under the lock and journal the documents it touched."""
        with self.db.locked():
            self._catch_up()
            ids = ids_of()
            result = op()
            if deleting:
                entry = {"del": ids}
            else:
                upserted = getattr(result, "upserted_id", None)
                touched = [*ids, *([upserted] if upserted is not None else [])]
                entry = {"put": list(self._coll.find({"_id": {"$in": touched}}))}
            if entry.get("put") or entry.get("del"):
                self._append(entry)
            return result

    def _ids(self, filter: dict | None, sort: Any = None, one: bool = False) -> Callable[[], list]:
        def ids() -> list:
            cursor = self._coll.find(filter or {}, {"_id": 1})
            if sort:
                cursor = cursor.sort(sort)
            if one:
                cursor = cursor.limit(1)
            return [d["_id"] for d in cursor]

        return ids

    # -- reads ---------------------------------------------------------------------------
    def _read(self) -> Any:
        with self.db.thread_lock:
            self._catch_up()
            return self._coll

    def find(self, *args: Any, **kwargs: Any) -> Any:
        """Return a cursor over the current documents (``pymongo`` semantics)."""
        with self.db.thread_lock:
            self._catch_up()
            return self._coll.find(*args, **kwargs)

    def find_one(self, *args: Any, **kwargs: Any) -> dict | None:
        """Return one matching document."""
        with self.db.thread_lock:
            self._catch_up()
            return self._coll.find_one(*args, **kwargs)

    def count_documents(self, filter: dict, **kwargs: Any) -> int:
        """Count matching documents."""
        with self.db.thread_lock:
            self._catch_up()
            return self._coll.count_documents(filter, **kwargs)

    def distinct(self, key: str, filter: dict | None = None) -> list:
        """Distinct values of a key."""
        with self.db.thread_lock:
            self._catch_up()
            return self._coll.distinct(key, filter)

    def aggregate(self, pipeline: list, **kwargs: Any) -> Any:
        """Run an aggregation pipeline."""
        with self.db.thread_lock:
            self._catch_up()
            return self._coll.aggregate(pipeline, **kwargs)

    # -- writes --------------------------------------------------------------------------
    def insert_one(self, doc: dict, **kwargs: Any) -> Any:
        """Insert one document."""
        return self.insert_many([doc], **kwargs)

    def insert_many(self, docs: list[dict], **kwargs: Any) -> Any:
        """Insert documents (journaled as given, with the ``_id`` mongomock assigned)."""
        docs = list(docs)
        with self.db.locked():
            self._catch_up()
            result = self._coll.insert_many(docs, **kwargs)  # sets doc["_id"], as pymongo does
            self._append({"put": docs})
            return result

    def update_one(self, filter: dict, update: dict, **kwargs: Any) -> Any:
        """Update the first matching document."""
        return self._write(
            self._ids(filter, one=True), lambda: self._coll.update_one(filter, update, **kwargs)
        )

    def update_many(self, filter: dict, update: dict, **kwargs: Any) -> Any:
        """Update every matching document."""
        return self._write(self._ids(filter), lambda: self._coll.update_many(filter, update, **kwargs))

    def replace_one(self, filter: dict, doc: dict, **kwargs: Any) -> Any:
        """Replace the first matching document."""
        return self._write(self._ids(filter, one=True), lambda: self._coll.replace_one(filter, doc, **kwargs))

    def find_one_and_update(self, filter: dict, update: dict, **kwargs: Any) -> dict | None:
        """Atomically update one document and return it (before, unless ``return_document``)."""
        return self._find_one_and(
            filter, kwargs, lambda: self._coll.find_one_and_update(filter, update, **kwargs)
        )

    def find_one_and_replace(self, filter: dict, doc: dict, **kwargs: Any) -> dict | None:
        """Atomically replace one document and return it."""
        return self._find_one_and(
            filter, kwargs, lambda: self._coll.find_one_and_replace(filter, doc, **kwargs)
        )

    def _find_one_and(self, filter: dict, kwargs: dict, op: Callable[[], Any]) -> Any:
        with self.db.locked():
            self._catch_up()
            touched = self._ids(filter, kwargs.get("sort"), one=True)()
            result = op()
            if not touched and kwargs.get("upsert"):
                if result is not None and kwargs.get("return_document") == ReturnDocument.AFTER:
                    touched = [result["_id"]]
                else:  # the upserted document: the only one matching now that did not before
                    touched = self._ids(filter, kwargs.get("sort"), one=True)()
            if touched:
                self._append({"put": list(self._coll.find({"_id": {"$in": touched}}))})
            return result

    def delete_one(self, filter: dict, **kwargs: Any) -> Any:
        """Delete the first matching document."""
        return self._write(self._ids(filter, one=True), lambda: self._coll.delete_one(filter, **kwargs), True)

    def delete_many(self, filter: dict, **kwargs: Any) -> Any:
        """Delete every matching document."""
        return self._write(self._ids(filter), lambda: self._coll.delete_many(filter, **kwargs), True)

    def drop(self) -> None:
        """Delete every document."""
        self.delete_many({})

    def create_index(self, *args: Any, **kwargs: Any) -> str:
        """Accept and ignore (see the module docstring)."""
        return "ignored"

    def __getattr__(self, name: str) -> Any:  # anything else: read-only pass-through
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._read(), name)


class JournalDatabase:
    """A folder of journaled collections with one process-and-thread lock for writes."""

    def __init__(self, root: str | Path, name: str = "fireworks") -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.name = name
        self._client = mongomock.MongoClient()
        self._collections: dict[str, JournalCollection] = {}
        self.thread_lock = threading.RLock()
        self._depth = 0
        self._lock_fh: Any = None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the database's exclusive lock (re-entrant within a thread)."""
        with self.thread_lock:
            if self._depth == 0:
                self._lock_fh = open(self.root / "launchpad.lock", "a+")
                fcntl.flock(self._lock_fh, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
                    self._lock_fh.close()
                    self._lock_fh = None

    def __getitem__(self, name: str) -> JournalCollection:
        if name not in self._collections:
            self._collections[name] = JournalCollection(self, name)
        return self._collections[name]

    def __getattr__(self, name: str) -> JournalCollection:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def drop_collection(self, name: str) -> None:
        """Delete every document of a collection."""
        self[name].delete_many({})

    def command(self, *args: Any, **kwargs: Any) -> dict:
        """Accept server commands FireWorks sends for maintenance (compact) and do nothing."""
        return {"ok": 1}

    def list_collection_names(self) -> list[str]:
        """Names of the journaled collections present on disk."""
        return sorted(p.stem for p in self.root.glob("*.jsonl"))


class EmbeddedLaunchPad(LaunchPad):
    """A FireWorks LaunchPad on a :class:`JournalDatabase` folder (no MongoDB server).

    Parameters
    ----------
    path : str or Path
        Folder of the journals (created).
    strm_lvl : str
        FireWorks log level.
    """

    def __init__(self, path: str | Path, strm_lvl: str = "ERROR", **kwargs: Any) -> None:
        # the parent builds a pymongo client lazily (it never connects): replace its database
        super().__init__(host="localhost", name="fireworks", strm_lvl=strm_lvl, logdir=kwargs.get("logdir"))
        self.path = Path(path).resolve()
        self.db = JournalDatabase(self.path)  # type: ignore[assignment]
        self.fireworks = self.db.fireworks
        self.launches = self.db.launches
        self.offline_runs = self.db.offline_runs
        self.fw_id_assigner = self.db.fw_id_assigner
        self.workflows = self.db.workflows
        self.gridfs_fallback = None
        if self.fw_id_assigner.find_one({}) is None:
            with self.db.locked():
                if self.fw_id_assigner.find_one({}) is None:
                    self.fw_id_assigner.insert_one({"next_fw_id": 1, "next_launch_id": 1})

    def to_dict(self) -> dict[str, Any]:
        """Serialise as the journal folder (what workers need to reopen it)."""
        return {"@module": type(self).__module__, "@class": type(self).__name__, "path": str(self.path)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmbeddedLaunchPad:
        """Reopen from :meth:`to_dict`."""
        return cls(d["path"])

    def reset(
        self, password: str | None = None, require_password: bool = False, max_reset_wo_password: int = 0
    ) -> None:
        """Delete every workflow, firework and launch."""
        with self.db.locked():
            for name in ("fireworks", "launches", "workflows", "offline_runs", "fw_id_assigner"):
                self.db[name].delete_many({})
            self.fw_id_assigner.insert_one({"next_fw_id": 1, "next_launch_id": 1})
