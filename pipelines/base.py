"""What every technique pipeline provides to the sweep."""
from __future__ import annotations

import abc
from typing import Any, Mapping

from lossbound.core.types import Dataset, Result

__all__ = ["Dataset", "Result", "Technique"]


class Technique(abc.ABC):
    """A configured pipeline, built once per sweep and cheap to call per evaluation point.

    Parameters
    ----------
    config : mapping
        The technique's ``pipeline`` section (plain dict, already resolved).
    """

    name: str = ""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)

    @abc.abstractmethod
    def load(self, dataset_config: Mapping[str, Any]) -> Dataset:
        """Read (or generate) the dataset described by ``dataset_config``; raw files read-only.

        Raises ``lossbound.core.errors.InputError`` with a one-line message for missing/bad files.
        """

    def prepare(self, raw: Dataset) -> dict[str, Any]:
        """Parameters derived once from the raw data and reused for every compressed run
        (e.g. the rotation centre), so differences come from compression only. JSON-able."""
        return {}

    @abc.abstractmethod
    def run(self, data: Dataset, prepared: Mapping[str, Any]) -> Result:
        """The science result (e.g. reconstructed slices) as named arrays."""

    def preview(self, result: Result) -> dict[str, Any]:
        """The small part of a result that :meth:`figure` draws (kept per point in memory,
        so figures can be drawn after a study for the points worth showing)."""
        return {}

    def figure(self, raw: Mapping[str, Any], compressed: Mapping[str, Any], *, title: str = ""):
        """A matplotlib figure comparing the previews of a raw and a compressed result (or None)."""
        return None

    def describe(self) -> dict[str, Any]:
        """Parameters to log (backend, versions); part of the raw-result cache key."""
        return {"technique": self.name, **self.config}
