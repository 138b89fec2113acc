"""The ``store`` group: move a campaign's results between the embedded store and MongoDB."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from superionic.cli.common import CampaignArg, ForceFieldOpt, ScaleOpt, _user_errors, console, quiet
from superionic.errors import SuperionicError, mask_uri

store_app = typer.Typer(
    help=(
        "Move a campaign's results between stores: a laptop's embedded store and a cluster's MongoDB.\n\n"
        "Both files describe the same campaign (same systems and stages) and differ in `store:`."
    ),
    no_args_is_help=True,
)


@store_app.command("copy")
@_user_errors
def copy(
    source: CampaignArg,
    target: Annotated[Path, typer.Argument(help="Campaign YAML whose store receives the results.")],
    scale: ScaleOpt = None,
    force_field: ForceFieldOpt = None,
) -> None:
    """Copy every finished job output, blob and job state from SOURCE's store into TARGET's store.

    A campaign started on a laptop continues on the cluster without recomputing what finished
    (``run``/``submit`` skip jobs whose outputs are in the store), and the cluster's results come
    back to a laptop for analysis. Copying again changes nothing.

    Examples::

        superionic store copy laptop.yaml cluster.yaml     # embedded -> MongoDB, then submit there
        superionic store copy cluster.yaml laptop.yaml     # MongoDB -> embedded, then report here
    """
    quiet()
    from superionic.dispatch.campaign_store import copy_store, open_campaign_store
    from superionic.spec import load_campaign

    src = load_campaign(source, scale=scale, force_field=force_field)
    dst = load_campaign(target, scale=scale, force_field=force_field)
    if _where(src) == _where(dst):
        raise SuperionicError.single(
            "TARGET",
            "it names the same store as SOURCE",
            str(target),
            "a campaign file with another `store:`",
        )
    from_store = open_campaign_store(src, create=False)
    if from_store is None:
        raise SuperionicError.single(
            "SOURCE", "its store holds nothing yet", str(src.store_path), "a campaign that has run"
        )
    to_store = open_campaign_store(dst, create=True)
    assert to_store is not None
    counts = copy_store(from_store, to_store)
    models = f", {counts['models']} fine-tuned model file(s)" if counts.get("models") else ""
    console.print(
        f"copied {counts['outputs']} output(s), {counts['blobs']} blob(s), {counts['trajectories']} "
        f"trajectory(ies){models} and {counts['states']} job state(s) from {_where(src)} to {_where(dst)}",
        highlight=False,
    )


def _where(campaign: object) -> str:
    spec = campaign.spec.store  # type: ignore[attr-defined]
    if spec.uri:
        return f"{mask_uri(spec.uri)} ({spec.database}, {campaign.spec.name})"  # type: ignore[attr-defined]
    return str(campaign.store_path.resolve())  # type: ignore[attr-defined]
