"""Where LossBound reads and writes, for every command.

Outputs go to ``./runs`` in the working directory, or to ``$LOSSBOUND_HOME`` when it is set
(``paths.runs_dir=...`` overrides both for a study), never into the install folder. The
built-in simulations are written to ``reference_data/`` of a source checkout, and to
``<runs>/reference_data`` for an installed package. Measured data shipped beside a checkout
(``../shared/data``) can be pointed to with ``$LOSSBOUND_SHARED_DATA``.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["checkout_root", "reference_data_dir", "runs_dir", "shared_data_dir"]


def checkout_root() -> Path | None:
    """The source checkout LossBound is imported from (it holds ``pyproject.toml``, ``conf/``
    and ``pipelines/`` beside ``lossbound/``), or None for an installed package."""
    root = Path(__file__).resolve().parents[2]
    markers = ("pyproject.toml", "conf", "pipelines", "lossbound")
    return root if all((root / m).exists() for m in markers) else None


def runs_dir() -> Path:
    """``$LOSSBOUND_HOME`` if set, else ``./runs`` in the working directory (absolute)."""
    home = os.environ.get("LOSSBOUND_HOME")
    return Path(home).expanduser().resolve() if home else Path.cwd().resolve() / "runs"


def reference_data_dir(runs: str | Path | None = None) -> Path:
    """Where the built-in simulations are written on first use."""
    root = checkout_root()
    if root is not None:
        return root / "reference_data"
    return (Path(runs) if runs is not None else runs_dir()) / "reference_data"


def shared_data_dir() -> Path:
    """The measured datasets: ``$LOSSBOUND_SHARED_DATA``, else ``../shared/data`` beside a
    checkout (or beside the working directory for an installed package)."""
    given = os.environ.get("LOSSBOUND_SHARED_DATA")
    if given:
        return Path(given).expanduser().resolve()
    root = checkout_root() or Path.cwd().resolve()
    return root.parent / "shared" / "data"
