"""Azimuthal integration pipeline (``azint``): frames, geometry, masks and pyFAI profiles."""

from pipelines.azint import technique  # noqa: F401  (registers "azint" in TECHNIQUES)
from pipelines.azint.technique import AzintTechnique

__all__ = ["AzintTechnique"]
