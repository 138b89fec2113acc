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
        from maggma.stores import GridFSURIStore, MongoURIStore

        docs = MongoURIStore(spec.uri, collection_name="outputs", database=spec.database)
        blobs = GridFSURIStore(spec.uri, collection_name="blobs", database=spec.database)
        state = MongoURIStore(spec.uri, collection_name="state", database=spec.database, key="uuid")
        return CampaignStore(JobStore(docs, additional_stores={"data": blobs}), state, None)
    root = campaign.store_path
    if not create and not root.exists():
        return None
    if create:
        root.mkdir(parents=True, exist_ok=True)
    docs = JournalStore(root / "outputs.jsonl", collection_name="outputs")
    blobs = BlobDirStore(root / "blobs")
    state = JournalStore(root / "state.jsonl", collection_name="state", key="uuid")
    return CampaignStore(JobStore(docs, additional_stores={"data": blobs}), state, root)
