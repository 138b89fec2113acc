"""Map YAML nodes and pydantic errors to one-line problems naming the file's line."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from superionic.errors import Problem
from superionic.spec.models import (
    STAGE_NAMES,
    CampaignSpec,
    HullStage,
    MDStage,
    NMRStage,
    OrderStage,
    QuenchStage,
    RelaxStage,
    StoreSpec,
    SystemSpec,
)

_STAGE_MODELS: dict[str, type[BaseModel]] = {
    "order": OrderStage,
    "relax": RelaxStage,
    "hull": HullStage,
    "nmr": NMRStage,
    "md": MDStage,
    "quench": QuenchStage,
}


def _line_of(data: Any, loc: tuple) -> int | None:
    """Return the 1-based line of the deepest YAML node on ``loc`` (None if unknown)."""
    node, line = data, None
    for part in loc:
        try:
            if isinstance(part, int) and isinstance(node, list):
                line = node.lc.item(part)[0] + 1
                node = node[part]
            elif isinstance(node, dict) and part in node:
                line = node.lc.key(part)[0] + 1
                node = node[part]
            else:
                continue  # pydantic's union tag, or a missing key
        except (AttributeError, KeyError, IndexError, TypeError):
            break
    return line


def _yaml_path(loc: tuple, data: Any) -> str:
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
        elif isinstance(node, dict) and part not in node and part in _STAGE_MODELS:
            continue  # discriminator tag inserted by pydantic
        else:
            out += f".{part}" if out else str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out or "(top level)"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """Return the model whose fields a location's last key belongs to."""
    model: type[BaseModel] | None = CampaignSpec
    for part in loc[:-1]:
        if model is None:
            return None
        if isinstance(part, int):
            continue
        if part in _STAGE_MODELS and model is not CampaignSpec:
            model = _STAGE_MODELS[part]
            continue
        sub = {"systems": SystemSpec, "store": StoreSpec, "stages": None}.get(part, "other")
        if part == "stages":
            model = None  # resolved by the tag that follows
            for nxt in loc[loc.index(part) + 1 :]:
                if isinstance(nxt, str) and nxt in _STAGE_MODELS:
                    model = _STAGE_MODELS[nxt]
                    break
            continue
        if sub == "other":
            return None
        model = sub
    return model


def _problems_from_validation(err: ValidationError, data: Any) -> list[Problem]:
    problems = []
    for e in err.errors():
        loc = tuple(e["loc"])
        where = _yaml_path(loc, data)
        line = _line_of(data, loc)
        valid = ""
        value = e.get("input")
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            model = _model_at(loc)
            msg = f"unknown key '{loc[-1]}'"
            value = None
            if model is not None:
                valid = "keys " + ", ".join(model.model_fields)
        elif e["type"] == "missing":
            msg = "required field is missing"
            value = None
        elif e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            valid = "stage: one of " + ", ".join(STAGE_NAMES)
        if isinstance(value, dict | list) and len(str(value)) > 80:
            value = None
        problems.append(Problem(where, msg, value, valid, line))
    return problems


def _to_plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_to_plain(v) for v in node]
    return node
