"""A campaign job's dataset: what ``lossbound campaign run`` hands each Hydra job (kept apart
from the command, which launches the jobs through ``lossbound.cli.evaluate``)."""
from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from lossbound.cli.config import CONFIG_DIR
from lossbound.study.campaign import Campaign, load_campaign

__all__ = ["apply_entry", "dataset_configs", "dataset_keys", "load", "techniques"]


def dataset_keys() -> list[str]:
    """The metadata keys a campaign entry may set: those of ``dataset=file``."""
    return list(yaml.safe_load((CONFIG_DIR / "dataset" / "file.yaml").read_text()))


def techniques() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "technique").glob("*.yaml"))


def dataset_configs() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "dataset").glob("*.yaml"))


def load(path: str | Path, *, technique: str | None = None) -> Campaign:
    return load_campaign(path, metadata_keys=dataset_keys(), technique=technique, techniques=techniques(),
                         dataset_configs=dataset_configs())


# -- in each job -----------------------------------------------------------------------------------
def apply_entry(cfg: DictConfig) -> None:
    """Set ``cfg.dataset`` to the campaign entry ``cfg.campaign.entry`` (a job of ``run``), with
    the entry's key for the done-check."""
    camp = load(cfg.campaign.file, technique=str(cfg.technique.name))
    entry = camp.entry(str(cfg.campaign.entry))
    with open_dict(cfg):
        if entry.config is not None:  # a shipped dataset config instead of dataset=file
            cfg.dataset = OmegaConf.create(yaml.safe_load((CONFIG_DIR / "dataset" / f"{entry.config}.yaml").read_text()))
        # the entry's keys over the config's
        cfg.dataset = OmegaConf.merge(cfg.dataset, entry.dataset_config())
        cfg.campaign.entry_key = entry.key()
        cfg.campaign.file = str(camp.path)
