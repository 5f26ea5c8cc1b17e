"""Absorption tomography pipeline (``tomo``): I/O, reconstruction and the registered technique."""

from lossbound.pipelines.tomo import technique  # noqa: F401  (registers "tomo" in TECHNIQUES)
from lossbound.pipelines.tomo.technique import TomoTechnique

__all__ = ["TomoTechnique"]
