"""FireWorks configuration files for a SLURM site: queue adapter, worker, LaunchPad."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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


def queue_workers(qadapter: Path, launch_dir: Path, jobs: int) -> list[Any]:
    """Queue ``jobs`` SLURM jobs through a FireWorks queue adapter; return their job ids.

    Each job gets its own folder under ``launch_dir`` (its ``submit.sh`` and logs). A relative
    ``logdir`` in the adapter is taken relative to where this runs (FireWorks would resolve it
    inside each job's folder) and created.

    Raises
    ------
    SuperionicError
        When the queue refuses a job.
    """
    import os
    import time

    from fireworks.utilities.fw_serializers import load_object_from_file

    from superionic.errors import SuperionicError

    qa = load_object_from_file(str(qadapter))
    if qa.get("logdir"):
        logdir = Path(os.path.expanduser(str(qa["logdir"]))).resolve()
        logdir.mkdir(parents=True, exist_ok=True)
        qa["logdir"] = str(logdir)
    launch_dir.mkdir(parents=True, exist_ok=True)
    ids = []
    for k in range(jobs):
        d = launch_dir / f"job_{time.strftime('%Y%m%d-%H%M%S')}_{k}"
        d.mkdir(parents=True, exist_ok=True)
        script = d / "submit.sh"
        script.write_text(qa.get_script_str(str(d)))
        cwd = os.getcwd()
        os.chdir(d)  # sbatch writes its output where it is called
        try:
            job_id = qa.submit_to_queue(str(script))
        finally:
            os.chdir(cwd)
        if job_id is None:
            raise SuperionicError.single(
                "--slurm",
                "sbatch refused the job (see the log in the folder)",
                str(d),
                "a working SLURM (sinfo)",
            )
        ids.append(job_id)
    return ids
