"""Open the stores of a campaign: embedded files by default, MongoDB when a URI is given."""

from __future__ import annotations

from jobflow import JobStore

from superionic.dispatch.local import CampaignStore
from superionic.dispatch.stores import BlobDirStore, JournalStore
from superionic.spec.loader import Campaign


def open_campaign_store(campaign: Campaign, create: bool = True) -> CampaignStore | None:
    """Return the campaign's stores.

    Parameters
    ----------
    campaign : Campaign
        The validated campaign.
    create : bool
        For the embedded store, create its folder; when False and the folder does not exist,
        return None (nothing has run yet).

    Returns
    -------
    CampaignStore or None

    """
    spec = campaign.spec.store
    if spec.uri:
        from maggma.stores import GridFSStore, MongoStore

        from superionic.dispatch.mongo import check_reachable, client_kwargs, connection_uri

        # one database may hold several campaigns: each has its own collections, named after it
        uri, prefix = connection_uri(spec), collection_prefix(campaign)
        check_reachable(uri, database=spec.database)
        kw = {"mongoclient_kwargs": client_kwargs()}  # a worker waits out a server restart
        docs = MongoStore.from_uri(uri, f"{prefix}outputs", database=spec.database, **kw)
        # GridFS: a trajectory larger than MongoDB's 16 MB document limit is stored in chunks
        blobs = GridFSStore(database=spec.database, collection_name=f"{prefix}blobs", uri=uri, **kw)
        state = MongoStore.from_uri(uri, f"{prefix}state", database=spec.database, key="uuid", **kw)
        store = CampaignStore(JobStore(docs, additional_stores={"data": blobs}), state, None)
        store.connect()  # maggma's Mongo stores, unlike the journal stores, do not connect on use
        return store
    root = campaign.store_path
    if not create and not root.exists():
        return None
    if create:
        root.mkdir(parents=True, exist_ok=True)
    docs = JournalStore(root / "outputs.jsonl", collection_name="outputs")
    blobs = BlobDirStore(root / "blobs")
    state = JournalStore(root / "state.jsonl", collection_name="state", key="uuid")
    return CampaignStore(JobStore(docs, additional_stores={"data": blobs}), state, root)


def collection_prefix(campaign: Campaign) -> str:
    """Return the prefix of the campaign's collections in a shared MongoDB database."""
    return f"{campaign.spec.name}."


def copy_store(source: CampaignStore, target: CampaignStore) -> dict[str, int]:
    """Copy every job output, blob, binary trajectory and job state of ``source`` into ``target``.

    jobflow has no store-to-store copy; this is one, in the keys jobflow's ``JobStore`` uses
    (outputs by ``uuid`` and ``index``, blobs by ``blob_uuid``, states by ``uuid``), so a campaign
    continued on the target skips what already finished. Blobs are copied one at a time (memory
    bounded by the largest blob); copying again changes nothing.

    Returns
    -------
    dict
        How many outputs, blobs, trajectories and states were copied (upserts; trajectories
        the target already holds are skipped).
    """
    source.connect()
    target.connect()
    counts = {"outputs": 0, "blobs": 0, "states": 0}
    for name, blobs in source.job_store.additional_stores.items():
        to = target.job_store.additional_stores[name]
        for meta in blobs.query({}, properties=["blob_uuid"]):
            blob = blobs.query_one({"blob_uuid": meta["blob_uuid"]})
            if blob is not None:
                to.update([_plain(blob, drop=("file",))], key="blob_uuid")
                counts["blobs"] += 1
    counts["trajectories"] = copy_trajectories(source, target)
    counts["models"] = copy_trajectories(source, target, kind="models")
    # outputs after the blobs and trajectories they reference, states last: a copy cut short
    # leaves no job that looks finished without its data
    docs = [_plain(d) for d in source.job_store.docs_store.query({})]
    if docs:
        target.job_store.docs_store.update(docs, key=["uuid", "index"])
    counts["outputs"] = len(docs)
    states = [_plain(d) for d in source.state.query({})]
    if states:
        target.state.update(states, key="uuid")
    counts["states"] = len(states)
    return counts


def copy_trajectories(
    source: CampaignStore, target: CampaignStore, block_bytes: int = 8 << 20, kind: str = "trajectories"
) -> int:
    """Copy the binary MD trajectories the target lacks, ``block_bytes`` at a time; return how many.

    ``kind`` ``models``: the fine-tuned models instead.
    """
    from superionic.trajectory_store import backend_for

    src, dst = backend_for(source.job_store, kind), backend_for(target.job_store, kind)
    present = set(dst.names())
    n = 0
    for name in src.names():
        if name in present:
            continue
        with src.open(name) as fin:
            out, token = dst.create(name)
            while block := fin.read(block_bytes):
                out.write(block)
            dst.commit(out, token, name)
        n += 1
    return n


def _plain(doc: dict, drop: tuple[str, ...] = ()) -> dict:
    """Return a stored document without the keys its store adds (``_id``, GridFS bookkeeping)."""
    skip = {"_id", "compression", "chunkSize", "length", "uploadDate", "md5", *drop}
    return {k: v for k, v in doc.items() if k not in skip}
