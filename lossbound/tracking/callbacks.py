"""Hydra multirun glue: one MLflow parent run per multirun, closed when the multirun ends.

The jobs of a multirun (joblib processes, submitit/SLURM jobs) find or create the parent in a
small JSON file in the multirun folder, under a file lock, so every job's study run nests
under the same parent whatever the launcher. ``on_multirun_end`` closes the parents and
prints the merged thresholds the jobs wrote together.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

PARENTS_FILE = "mlflow_parents.json"


def multirun_parent(sweep_dir: str | Path, label: str) -> Callable[[Any], str]:
    """A function ``tracker -> run id`` of the multirun's parent run in that tracker's
    experiment (created by the first job that asks)."""
    path = Path(sweep_dir) / PARENTS_FILE

    def parent(tracker) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = f"{tracker.uri}|{tracker.experiment_id}"
        with FileLock(str(path) + ".lock"):
            parents = json.loads(path.read_text()) if path.exists() else {}
            if key not in parents:
                # the parent must outlive this job: no pid tag, so it is never taken for stale
                run_id = tracker.start_run(label, tags={"lossbound.role": "multirun", "lossbound.pid": "0"})
                parents[key] = {"run_id": run_id, "uri": tracker.uri, "experiment": tracker.experiment_name}
                path.write_text(json.dumps(parents))
            return parents[key]["run_id"]

    return parent


class _SacctNotes(logging.Filter):
    """submitit asks ``sacct`` for job states every few seconds; on a cluster without SLURM
    accounting each call fails with a warning. Say it once (the states then come from each
    job's result file, and ``lossbound campaign run`` reports a job lost without one), then
    drop the repeats."""

    said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        if not _SacctNotes.said:
            _SacctNotes.said = True
            log.info("SLURM accounting is off here (sacct fails): job states come from the jobs' result files")
        return False


def quiet_sacct() -> None:
    """Handle submitit's accounting warnings (:class:`_SacctNotes`) and keep ``sacct``'s own
    complaint ("Slurm accounting storage is disabled") off the terminal: submitit runs it with
    the terminal's stderr, so its command is wrapped to discard stderr (stdout, the states, is
    unchanged; where accounting works nothing else changes)."""
    try:
        from submitit.slurm import slurm as submitit_slurm
    except ImportError:
        return
    logging.getLogger("submitit").addFilter(_SacctNotes())
    watcher = submitit_slurm.SlurmInfoWatcher
    if getattr(watcher, "_lossbound_quiet", False):
        return
    make = watcher._make_command

    def _make_command(self):
        command = make(self)
        return None if command is None else ["sh", "-c", 'exec "$@" 2>/dev/null', "sacct", *command]

    watcher._make_command = _make_command
    watcher._lossbound_quiet = True


class StudyCallbacks(Callback):
    """Closes the multirun's MLflow parent runs and prints the merged thresholds."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            target = str(config.hydra.launcher.get("_target_", "")).lower()
        except Exception:  # noqa: BLE001 - no launcher config: nothing to quieten
            return
        if "submitit" in target and "slurm" in target:
            quiet_sacct()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sweep_dir = Path(config.hydra.sweep.dir)
        except Exception:  # noqa: BLE001 - no sweep folder: nothing to close
            return
        path = sweep_dir / PARENTS_FILE
        thresholds = None
        try:
            thresholds = Path(config.paths.thresholds_dir) / f"{config.technique.name}.yaml"
        except Exception:  # noqa: BLE001
            pass
        if path.exists():
            from lossbound.tracking.tracker import Tracker

            for entry in json.loads(path.read_text()).values():
                tracker = Tracker({"tracking_uri": entry["uri"], "experiment": entry["experiment"]})
                if thresholds is not None and thresholds.exists():
                    tracker.log_file(entry["run_id"], thresholds)
                tracker.end_run(entry["run_id"], "FINISHED")
                log.info("%s", tracker.ui_hint())
        if thresholds is None or not thresholds.exists():
            log.warning("multirun finished but wrote no thresholds file (%s)", thresholds)
            return
        from lossbound.results.thresholds import load_thresholds

        doc = load_thresholds(thresholds)
        lines = [f"multirun thresholds in {thresholds} (across datasets):"]
        for name, e in (doc.get("codecs") or {}).items():
            group = f" (group {e['limiting_group']})" if e.get("limiting_group") else ""
            lines.append(f"  {name:<12} bound {e.get('bound')}  limiting dataset {e.get('limiting_dataset')}{group}")
        log.info("\n".join(lines))
