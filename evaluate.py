"""Entry point: ``python -m evaluate technique=tomo`` sweeps codec error bounds.

A thin ``@hydra.main`` wrapper: composition lives in ``conf/``, the work in ``lossbound.sweep``.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from lossbound.errors import InputError

ROOT = Path(__file__).resolve().parent
OmegaConf.register_new_resolver("lossbound_root", lambda: str(ROOT), replace=True)
log = logging.getLogger("evaluate")


def run(cfg: DictConfig):
    """Resolve the config and run the sweep; returns the ``SweepResult``."""
    from lossbound.sweep import Sweep

    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    return Sweep(container).run()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (InputError, OmegaConfBaseException) as exc:
        # Bad input is the user's to fix: one line naming what is wrong, no traceback.
        if isinstance(exc, MissingMandatoryValue):
            msg = f"{exc.full_key} is required: set it on the command line, e.g. {exc.full_key}=..."
        else:
            msg = str(exc).strip().splitlines()[0]
        log.error(msg)
        sys.exit(f"error: {msg}")


if __name__ == "__main__":
    main()
