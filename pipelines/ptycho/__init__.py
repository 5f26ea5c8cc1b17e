"""Ptychography (``ptycho``): diffraction patterns at overlapping scan positions, reconstructed
to a complex object and probe by CDTools (PyTorch, CPU; ``pip install 'lossbound[ptycho]'``)."""

from lossbound.pipelines.ptycho import technique  # noqa: F401  (registers "ptycho" in TECHNIQUES)
from lossbound.pipelines.ptycho.technique import PtychoTechnique

__all__ = ["PtychoTechnique"]
