"""Serial crystallography (``sx``): Bragg-spot finding, hit finding, indexing with the known
cell and integration of the predicted reflections on stills.

Indexing runs rstbx (cctbx-base) in its own worker process (``index_worker.py``, a script:
cctbx must be imported before scipy, so it never is in the framework's processes).
"""

from lossbound.pipelines.sx import technique  # noqa: F401  (registers "sx" in TECHNIQUES)
from lossbound.pipelines.sx.technique import SxTechnique

__all__ = ["SxTechnique"]
