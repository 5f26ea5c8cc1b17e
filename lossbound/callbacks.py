"""Hydra callbacks."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class ThresholdSummary(Callback):
    """After a multirun, print the thresholds file that the jobs filled in together."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            path = Path(config.paths.thresholds_dir) / f"{config.technique.name}.yaml"
        except Exception:  # config without paths: nothing to report
            return
        if not path.exists():
            log.warning("multirun finished but wrote no thresholds file (%s)", path)
            return
        from lossbound.thresholds import load_thresholds

        doc = load_thresholds(path)
        lines = [f"multirun thresholds in {path}:"]
        for name, e in (doc.get("codecs") or {}).items():
            lines.append(f"  {name:<12} {e.get('mode')}={e.get('bound')}  ratio {e.get('compression_ratio')}")
        log.info("\n".join(lines))
