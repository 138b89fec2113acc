"""Campaign files: schema, loading with clear errors, and sweep expansion."""

from superionic.spec.loader import Campaign, SystemInstance, load_campaign
from superionic.spec.models import (
    CampaignSpec,
    HullStage,
    MDStage,
    NMRStage,
    OrderStage,
    QuenchStage,
    RelaxStage,
    SystemSpec,
)

__all__ = [
    "Campaign",
    "CampaignSpec",
    "HullStage",
    "MDStage",
    "NMRStage",
    "OrderStage",
    "QuenchStage",
    "RelaxStage",
    "SystemInstance",
    "SystemSpec",
    "load_campaign",
]
