"""``lossbound study technique=tomo`` (or ``python -m evaluate ...`` in a checkout) runs a study.

A thin ``@hydra.main`` wrapper: composition lives in ``conf/`` (``lossbound.conf``), the work in
``lossbound.study``. It only tells the study what the launcher knows (jobs running side by
side, the multirun's MLflow parent) and turns bad input into one line and a non-zero exit.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from lossbound.cli.config import CONFIG_DIR
from lossbound.core.errors import InputError

log = logging.getLogger("evaluate")


def runtime_info() -> dict[str, Any]:
    """What Hydra knows and the study logs: the command line's overrides, and for a multirun
    the jobs running side by side on this machine and the multirun's MLflow parent."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hc = HydraConfig.get()
    except ValueError:  # composed outside @hydra.main (tests)
        return {}
    out: dict[str, Any] = {"overrides": list(hc.overrides.task)}
    if hc.mode != RunMode.MULTIRUN:
        return out
    from lossbound.study.executor import available_cores
    from lossbound.tracking.callbacks import multirun_parent

    target = str(hc.launcher.get("_target_", "")).lower()
    jobs = 1
    if "joblib" in target:
        n = hc.launcher.get("n_jobs") or -1
        jobs = available_cores() if n < 0 else int(n)
    elif "submitit" in target and "local" in target:
        jobs = available_cores()  # submitit_local starts every job at once
    label = f"{hc.job.name} multirun {Path(hc.sweep.dir).name}"
    return {**out, "parallel_jobs": jobs, "parent_run": multirun_parent(hc.sweep.dir, label)}


def run(cfg: DictConfig):
    """Resolve the config and run the study; returns the ``StudyResult``."""
    from lossbound.study.study import Study

    if (cfg.get("campaign") or {}).get("entry"):
        from lossbound.cli.campaign_entry import apply_entry

        apply_entry(cfg)  # a job of `lossbound campaign run`: this dataset's entry
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    container.pop("hydra", None)
    return Study(container, runtime_info()).run()


def _campaign_failure(cfg: DictConfig, reason: str) -> None:
    """A campaign job that cannot measure its dataset records why in the thresholds file
    (``failed_datasets``) and ends normally: the other datasets' jobs go on."""
    from lossbound.results.thresholds import record_failure

    try:
        path = Path(str(cfg.paths.thresholds_dir)) / f"{cfg.technique.name}.yaml"
        record_failure(path, technique=str(cfg.technique.name), dataset_name=str(cfg.campaign.entry), reason=reason,
                       group=cfg.dataset.get("group"), source=str(cfg.dataset.get("path")))
    except Exception as exc:  # noqa: BLE001 - the failure is logged either way
        log.error("campaign dataset %s: failure not recorded (%s)", cfg.campaign.entry, exc)


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    campaign_job = bool((cfg.get("campaign") or {}).get("entry"))
    try:
        run(cfg)
    except (InputError, OmegaConfBaseException) as exc:
        # Bad input is the user's to fix: one line naming what is wrong, no traceback.
        if isinstance(exc, MissingMandatoryValue):
            msg = f"{exc.full_key} is required: set it on the command line, e.g. {exc.full_key}=..."
        else:
            msg = str(exc).strip().splitlines()[0]
        log.error(msg)
        if campaign_job:
            _campaign_failure(cfg, msg)
            return
        sys.exit(f"error: {msg}")
    except Exception as exc:  # noqa: BLE001 - a crash fails this dataset of a campaign, not the others
        if not campaign_job:
            raise
        log.exception("campaign dataset %s crashed", cfg.campaign.entry)
        _campaign_failure(cfg, f"crashed: {type(exc).__name__}: {str(exc).strip()[:200]}")


if __name__ == "__main__":
    main()
