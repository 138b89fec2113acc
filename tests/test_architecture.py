"""The package's shape: no import cycles, one engine interface, typed presets, jobflow's runner semantics."""

from __future__ import annotations

import ast
import itertools
import shutil
from pathlib import Path

import pytest
from jobflow import Flow, JobStore, Response, job, run_locally
from maggma.stores import MemoryStore

from superionic.dispatch.local import CampaignStore, run_flows
from superionic.engines.base import ENGINES, Engine, get_engine
from superionic.errors import SpecError

SRC = Path(__file__).resolve().parents[1] / "src" / "superionic"


def _imports(path: Path) -> set[str]:
    """Every module a file imports (top level and inside functions; TYPE_CHECKING blocks excluded)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for b in node.body for n in ast.walk(b)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def _unit(path: Path) -> str:
    """The subpackage (or top-level module) a file belongs to: ``engines``, ``flows``, ..."""
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _graph() -> dict[str, dict[str, set[str]]]:
    """Unit -> unit it imports -> the files that do."""
    units = {p.name if p.is_dir() else p.stem for p in SRC.iterdir() if not p.name.startswith("_")}
    graph: dict[str, dict[str, set[str]]] = {}
    for path in SRC.rglob("*.py"):
        src = _unit(path)
        for mod in _imports(path):
            parts = mod.split(".")
            if parts[0] == "superionic" and len(parts) > 1 and parts[1] in units and parts[1] != src:
                graph.setdefault(src, {}).setdefault(parts[1], set()).add(str(path.relative_to(SRC)))
    return graph


def test_no_import_cycle_between_subpackages() -> None:
    """Depth-first search for a cycle in the unit graph (function-level imports count too)."""
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph.get(node, {}):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    detail = [
        " -> ".join(c) + ": " + "; ".join(f"{a}->{b} {sorted(graph[a][b])}" for a, b in itertools.pairwise(c))
        for c in cycles
    ]
    assert not cycles, "\n".join(detail)
    # the river runs one way: analysis knows no jobflow, spec no engine module, engines no campaign
    assert "spec" not in graph.get("engines", {})
    assert "stages" not in graph.get("engines", {})
    for path in (SRC / "analysis").rglob("*.py"):
        assert not {m for m in _imports(path) if m.split(".")[0] in ("jobflow", "fireworks")}, path


def test_the_graph_sees_a_planted_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cycle check can fail: a copy of the package with engines importing stages has a cycle."""
    copy = tmp_path / "superionic"
    shutil.copytree(SRC, copy)
    with open(copy / "engines" / "base.py", "a") as fh:
        fh.write("\n\ndef _planted() -> None:\n    from superionic.stages.md import md_flow  # noqa: F401\n")
    monkeypatch.setattr(f"{__name__}.SRC", copy)
    with pytest.raises(AssertionError, match="engines"):
        test_no_import_cycle_between_subpackages()


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_every_registered_engine_builds_what_it_offers(name: str) -> None:
    """A stage kind an engine offers is a method it overrides; the others refuse with one clear error."""
    engine = get_engine(name)
    assert engine.name == name and isinstance(engine, Engine)
    # stage kind -> (method, its positional arguments, the job builder hook that may serve it)
    methods = {
        "relax": ("relax", 3, "relax_maker"),
        "md": ("md", 4, "md_jobs"),
        "quench": ("quench", 4, "quench_jobs"),
        "nmr": ("nmr", 3, None),
    }
    for stage, (method, n_args, hook) in methods.items():
        builds = getattr(type(engine), method) is not getattr(Engine, method) or (
            hook is not None and engine.builder(hook) is not None
        )
        assert builds == (stage in engine.stages), (name, stage)
        if stage not in engine.stages:
            with pytest.raises(SpecError, match=f"engine '{name}' has no '{stage}' stage"):
                getattr(engine, method)(*([None] * n_args))
    if "md" in engine.stages:
        assert engine.builder("extension_jobs") is not None or type(engine).extend_md is not Engine.extend_md
    assert engine.writable <= engine.stages | {"static"}


def test_unknown_engine_is_named_with_the_valid_ones() -> None:
    with pytest.raises(SpecError, match=r"unknown engine .*'gpaw'.*abinit, cp2k, mlip, vasp"):
        get_engine("gpaw")


def test_a_preset_typo_is_an_error_naming_the_preset_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from superionic.engines.settings import load_preset
    from superionic.paths import configs_dir

    configs = tmp_path / "configs"
    shutil.copytree(configs_dir(), configs)
    text = (configs / "engines" / "demo.yaml").read_text()
    assert "    timestep_fs: 2.0\n" in text
    (configs / "engines" / "demo.yaml").write_text(
        text.replace("    timestep_fs: 2.0\n", "    timestep_f: 2.0\n")
    )
    line = 1 + text.splitlines().index("    timestep_fs: 2.0")
    monkeypatch.setenv("SUPERIONIC_CONFIGS", str(configs))
    with pytest.raises(SpecError) as err:
        load_preset("demo")
    message = str(err.value)
    assert message.startswith(
        f"{configs / 'engines' / 'demo.yaml'}:{line}: mlip.md.timestep_f: unknown setting"
    )
    assert "timestep_fs" in message  # the valid keys are listed


def test_a_preset_cannot_choose_the_nmr_stage_s_isotopes_or_calculations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which isotopes and which of shielding/EFG are the campaign's nmr stage's to say: a preset
    setting them is refused at its line (it would silently beat the stage's defaults)."""
    from superionic.engines.settings import load_preset

    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "nmrp.yaml").write_text(
        "name: nmrp\nvasp:\n  nmr:\n    isotopes: [Li-6]\n    efg: false\n"
    )
    monkeypatch.setenv("SUPERIONIC_CONFIGS", str(tmp_path))
    with pytest.raises(SpecError) as err:
        load_preset("nmrp")
    lines = str(err.value).splitlines()
    path = tmp_path / "engines" / "nmrp.yaml"
    assert any(ln.startswith(f"{path}:5: vasp.nmr.efg: set by the campaign's nmr stage") for ln in lines)
    assert any(ln.startswith(f"{path}:4: vasp.nmr.isotopes: set by the campaign's nmr stage") for ln in lines)


def test_settings_models_hold_the_defaults_once() -> None:
    """Engines read defaults from the models; a partial dict gets the model's values."""
    from superionic.engines.settings import Cp2kMDSettings, MLIPMDSettings, VaspMDSettings

    for model in (MLIPMDSettings, VaspMDSettings, Cp2kMDSettings):
        s = model.of({"production_steps": 10, "temperatures_K": [300]})  # a campaign-only key is ignored
        assert s.timestep_fs == 2.0 and s.production_steps == 10
    with pytest.raises(SpecError, match="timestep_fs"):
        VaspMDSettings.of({"timestep_fs": "fast"})


# --------------------------------------------------------------------------------------------
# the local runner against jobflow's own run_locally, on the same graphs


@job
def value(x: int) -> int:
    return x


@job
def plus(x: int | None, y: int = 1) -> int:
    return -1 if x is None else x + y


@job
def respond(kind: str, x: int) -> Response:
    extra = value(100 + x)
    if kind == "replace":
        return Response(replace=Flow([extra], output=extra.output))
    if kind == "stop_jobflow":
        return Response(output=x, stop_jobflow=True, detour=extra)
    return Response(output=x, **{kind: extra if kind != "stop_children" else True})


def _graph_for(kind: str) -> list[Flow]:
    a = value(1)
    r = respond(kind, a.output)
    b = plus(r.output)
    c = plus(b.output, 10)
    return [Flow([a, r, b, c], name=kind), Flow([value(7)], name="other")]


def _outputs(store: JobStore) -> dict[str, list[int]]:
    """Job name -> sorted outputs of its (last) runs."""
    out: dict[str, list[int]] = {}
    for doc in store.query({}, properties=["name", "output", "uuid", "index"]):
        result = doc["output"]  # a replaced job's "store_inputs" holds a reference: compare its kind
        out.setdefault(doc["name"], []).append(result if isinstance(result, int) else -999)
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.parametrize("kind", ["replace", "detour", "addition", "stop_children", "stop_jobflow"])
def test_runner_gives_what_jobflow_run_locally_gives(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    theirs = JobStore(MemoryStore())
    for flow in _graph_for(kind):
        run_locally(flow, store=theirs, create_folders=False, log=False)
    ours = CampaignStore(JobStore(MemoryStore()), MemoryStore())
    run_flows(_graph_for(kind), ours, tmp_path / "jobs")
    ours.job_store.connect()
    theirs.connect()
    assert _outputs(ours.job_store) == _outputs(theirs)
