"""FireWorks configuration files for a SLURM site: queue adapter, worker, LaunchPad."""

from __future__ import annotations

from pathlib import Path


def write_site(
    folder: Path,
    venv: str,
    rocket_launch: str,
    partition: str | None = None,
    walltime: str = "01:00:00",
    nodes: int = 1,
    ntasks: int = 1,
    modules: list[str] | None = None,
    gpus: int = 0,
) -> list[Path]:
    """Write my_qadapter.yaml, my_fworker.yaml and my_launchpad.yaml for a SLURM site.

    Parameters
    ----------
    folder : Path
        Folder for the three files (created, with a ``queue/`` log folder inside).
    venv : str
        Python environment the jobs re-activate in ``pre_rocket`` (FireWorks' SLURM template
        starts a login shell, which resets PATH).
    rocket_launch : str
        Command each SLURM job runs (a ``superionic worker`` line).
    partition : str, optional
        SLURM partition.
    walltime : str
        SLURM walltime HH:MM:SS.
    nodes, ntasks : int
        Nodes and tasks per job.
    modules : list of str, optional
        Environment modules loaded before the environment is activated.
    gpus : int
        GPUs per job (``gres``), 0 for none.

    Returns
    -------
    list of Path
        The files written.

    """
    from ruamel.yaml import YAML

    folder = folder.resolve()  # FireWorks resolves a relative logdir inside each job's launch folder
    (folder / "queue").mkdir(parents=True, exist_ok=True)
    pre = [f"source {venv}/bin/activate"]  # the SLURM template's bash -l resets PATH
    pre = [*(f"module load {m}" for m in (modules or [])), *pre]
    qa = {
        "_fw_name": "CommonAdapter",
        "_fw_q_type": "SLURM",
        "rocket_launch": rocket_launch,
        "nodes": nodes,
        "ntasks": ntasks,
        "walltime": walltime,
        "job_name": "superionic",
        "logdir": str(folder / "queue"),
        "pre_rocket": "\n".join(pre),
    }
    if partition:
        qa["queue"] = partition
    if gpus:
        qa["gres"] = f"gpu:{gpus}"
    yaml = YAML()
    files = []
    for name, data in (
        ("my_qadapter.yaml", qa),
        ("my_fworker.yaml", {"name": "superionic-worker", "category": "", "query": "{}"}),
        (
            "my_launchpad.yaml",
            {
                "host": "mongodb://USER:PASSWORD@HOST:27017/superionic",
                "uri_mode": True,
                "name": "superionic",
                "logdir": None,
                "strm_lvl": "INFO",
            },
        ),
    ):
        with open(folder / name, "w") as fh:
            yaml.dump(data, fh)
        files.append(folder / name)
    return files
