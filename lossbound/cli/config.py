"""The Hydra configs (``lossbound.conf``, package data) and the resolvers they use."""
from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from lossbound.core import paths

__all__ = ["CONFIG_DIR", "compose", "register_resolvers"]

#: the config folder, wherever the package is (a checkout's ``conf/`` or the installed copy)
CONFIG_DIR = Path(str(importlib.resources.files("lossbound.conf")))


def register_resolvers() -> None:
    """``${lossbound_runs:}``, ``${lossbound_reference_data:<runs>}``, ``${lossbound_shared_data:}``."""
    OmegaConf.register_new_resolver("lossbound_runs", lambda: str(paths.runs_dir()), replace=True)
    OmegaConf.register_new_resolver("lossbound_reference_data", lambda runs=None: str(paths.reference_data_dir(runs)),
                                    replace=True)
    OmegaConf.register_new_resolver("lossbound_shared_data", lambda: str(paths.shared_data_dir()), replace=True)


register_resolvers()


def compose(overrides: Sequence[str], *, resolve: bool = False) -> Any:
    """The config as ``lossbound study <overrides>`` composes it (a DictConfig, or plain
    resolved containers with ``resolve=True``)."""
    from hydra import compose as _compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = _compose("config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True) if resolve else cfg
