"""Azimuthal integration pipeline (``azint``): frames, geometry, masks and pyFAI profiles."""

from lossbound.pipelines.azint import technique  # noqa: F401  (registers "azint" in TECHNIQUES)
from lossbound.pipelines.azint.technique import AzintTechnique

__all__ = ["AzintTechnique"]
