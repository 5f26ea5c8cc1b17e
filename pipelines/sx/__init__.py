"""Serial crystallography (``sx``): Bragg-spot finding and hit finding on stills.

Indexing (cctbx, in its own process because cctbx must be imported before scipy; see
docs/sx_indexing_research.md) and the Bragg-preserving reduction codec are still to come.
"""

from pipelines.sx import technique  # noqa: F401  (registers "sx" in TECHNIQUES)
from pipelines.sx.technique import SxTechnique

__all__ = ["SxTechnique"]
