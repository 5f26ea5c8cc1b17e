"""Absorption tomography pipeline (``tomo``): I/O, reconstruction and the registered technique."""

from pipelines.tomo import technique  # noqa: F401  (registers "tomo" in TECHNIQUES)
from pipelines.tomo.technique import TomoTechnique

__all__ = ["TomoTechnique"]
