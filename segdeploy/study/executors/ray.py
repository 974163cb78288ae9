"""The Ray executor: one Ray task per cell, with the ``num_cpus``/``num_gpus`` of the study's [resources] and
``max_retries`` on worker loss (a retried cell resumes from its checkpoint in the study folder).

Workers only compute and return rows; the driver writes results and markers. Artifacts go to the study folder,
so it must be on storage every node sees at the same path: before any cell is submitted, one probe task per
alive node reads a token file the driver wrote there, writes its own, and says which dataset folders it cannot see;
the driver then reads the workers' files back. Anything missing stops the study with the node named.

``address``: None starts (or reuses) a local Ray instance; ``auto`` joins the cluster this machine belongs to
(``ray start``); ``ray://HOST:PORT`` goes through Ray Client.
"""

from __future__ import annotations

import secrets
import shutil
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

from segdeploy.errors import SegdeployError
from segdeploy.study.cell import CellOutcome, failed_row, run_cell
from segdeploy.study.config import StudyConfig, is_registered
from segdeploy.study.plan import Cell

EXTRA = 'pip install "segdeploy[cluster]"'
PROBE_DIR = ".storage-probe"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise SegdeployError("--executor ray needs Ray, which is not installed.", fix=f"{EXTRA} (or use "
                             "--executor local).") from None
    return ray


def _probe(study_dir: str, token: str, folders: list[str]) -> dict:
    """Runs on one node: can it read the driver's token, write its own, and see the dataset folders?"""
    import ray

    probe = Path(study_dir) / PROBE_DIR
    node = ray.get_runtime_context().get_node_id()
    driver_file = probe / f"driver-{token}"
    reads = driver_file.is_file() and driver_file.read_text() == token
    wrote = None
    try:
        (probe / f"{node}-{token}").write_text(token)
    except OSError as e:
        wrote = f"{type(e).__name__}: {e}"
    return {"node": node, "host": socket.gethostname(), "reads_driver_file": reads, "write_error": wrote,
            "missing": [f for f in folders if not Path(f).is_dir()]}


def check_shared_storage(ray, study_dir: Path, folders: list[str]) -> list[dict]:
    """Raise SegdeployError unless every alive node shares ``study_dir`` (and sees ``folders``) with the driver;
    returns the probes' answers."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(8)
    probe_dir = study_dir / PROBE_DIR
    probe_dir.mkdir(parents=True, exist_ok=True)
    (probe_dir / f"driver-{token}").write_text(token)
    try:
        nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
        task = ray.remote(num_cpus=0)(_probe)
        refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n, soft=False))
                .remote(str(study_dir), token, folders) for n in nodes]
        try:
            answers = ray.get(refs, timeout=300)
        except ray.exceptions.GetTimeoutError:
            raise SegdeployError("the storage probe got no answer from every Ray node within 300 s.",
                                 path=study_dir, fix="check that the cluster's nodes are up (`ray status`).") from None
        problems = []
        for a in answers:
            mine = probe_dir / f"{a['node']}-{token}"
            if not a["reads_driver_file"]:
                problems.append(f"node {a['host']} cannot read the driver's file there")
            if a["write_error"]:
                problems.append(f"node {a['host']} cannot write there ({a['write_error']})")
            elif not (mine.is_file() and mine.read_text() == token):
                problems.append(f"the file node {a['host']} wrote there is not visible to the driver")
            if a["missing"]:
                problems.append(f"node {a['host']} does not see dataset folder(s) {', '.join(a['missing'])}")
        if problems:
            raise SegdeployError("the study folder is not on storage every Ray worker sees: " + "; ".join(problems)
                                 + ".", path=study_dir,
                                 fix="put --out and the datasets on a file system every node mounts at the same "
                                     "path (NFS, Lustre, a shared volume), or use --executor local.")
        return answers
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)


class RayExecutor:
    name = "ray"

    def __init__(self, config: StudyConfig, study_dir: str | Path, *, address: str | None = None):
        ray = _import_ray()
        self.ray, self.config, self.study_dir = ray, config, Path(study_dir).resolve()
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            try:
                ray.init(address=address, log_to_driver=False, include_dashboard=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise SegdeployError(f"cannot start or reach Ray at {address or 'a new local instance'}: {e}",
                                     fix="start the cluster first (`ray start --head` on one node, `ray start "
                                         "--address HEAD:6379` on the others) or check --address.") from None
        res = config.resources
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        fits = [r for r in nodes if r.get("CPU", 0) >= res.num_cpus and r.get("GPU", 0) >= res.num_gpus]
        if not fits:
            have = ", ".join(f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in nodes)
            raise SegdeployError(f"no Ray node can run a cell: the study asks num_cpus = {res.num_cpus}, num_gpus = "
                                 f"{res.num_gpus:g} per cell; the nodes have {have}.", path=config.path,
                                 fix="lower [resources] in the study file, or add nodes that have them.")
        self.parallelism = max(1, sum(min(r.get("CPU", 0) // res.num_cpus,
                                          r.get("GPU", 0) // res.num_gpus if res.num_gpus else float("inf"))
                                      for r in fits))
        folders = sorted({d for d in (*config.datasets, *(c.target for c in config.cross)) if not is_registered(d)})
        check_shared_storage(ray, self.study_dir, folders)

    def run(self, cells: Sequence[Cell], on_start: Callable[[Cell], None],
            on_finish: Callable[[Cell, CellOutcome], None]) -> None:
        ray, res = self.ray, self.config.resources
        task = ray.remote(run_cell).options(num_cpus=res.num_cpus, num_gpus=res.num_gpus,
                                            max_retries=res.max_retries, retry_exceptions=False)
        pending = {}
        for cell in cells:
            pending[task.remote(self.config, cell, str(self.study_dir))] = cell
            on_start(cell)
        try:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    cell = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as e:  # the worker died max_retries + 1 times, or Ray failed
                        reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                        outcome = CellOutcome(cell.cell_id, "failed", [failed_row(self.config, cell, "ray", reason)],
                                              0.0, "ray", reason)
                    on_finish(cell, outcome)
        except BaseException:
            for ref in pending:  # Ctrl-C: stop the cells still queued or running; they resume on the next run
                ray.cancel(ref, force=True)
            raise

    def close(self) -> None:
        if self._owns_ray:
            self.ray.shutdown()
