"""What every technique pipeline provides to the sweep."""
from __future__ import annotations

import abc
from typing import Any, Mapping

import numpy as np

from lossbound.core.errors import NotApplicable
from lossbound.core.noise import is_counts, poisson_resample
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
    #: processes :meth:`prepare` may keep busy at once (the study sets its share of the cores:
    #: nothing else runs while the raw result is computed); results do not depend on it
    processes: int = 1

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

    def noise_model(self, data: Dataset) -> str:
        """How :meth:`resample` re-measures ``data`` (one line for reports); raises
        :class:`~lossbound.core.errors.NotApplicable` when it cannot.

        The default: the payload holds photon counts, re-sampled as ``Poisson(counts)`` at the
        valid pixels. A technique with non-count data overrides both methods with a documented
        equivalent (e.g. a detector gain and dark offset).
        """
        if not is_counts(data.payload_array, data.mask):
            raise NotApplicable(f"{data.name}: payload {data.payload_array.dtype} is not photon counts "
                                f"(non-negative integers) and {self.name} has no other noise model")
        return "Poisson(counts) at the valid pixels"

    def resample(self, data: Dataset, rng: np.random.Generator) -> Dataset:
        """``data`` re-measured from counting statistics alone (see :meth:`noise_model`)."""
        self.noise_model(data)
        return data.with_payload(poisson_resample(data.payload_array, rng, valid=data.mask))

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
