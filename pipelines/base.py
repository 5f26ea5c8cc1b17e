"""What every technique pipeline provides to the sweep."""
from __future__ import annotations

import abc
import dataclasses
from functools import cached_property
from typing import Any, Mapping

import numpy as np

from lossbound.hashing import arrays_checksum


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Arrays of one measurement, with the one array a detector writes marked as ``payload``.

    Only the payload is compressed; everything else (angles, flats, geometry) is kept exact.
    """

    name: str
    arrays: Mapping[str, np.ndarray]
    payload: str
    source: str
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.payload not in self.arrays:
            raise ValueError(f"payload {self.payload!r} is not one of the arrays {sorted(self.arrays)}")

    @property
    def payload_array(self) -> np.ndarray:
        return self.arrays[self.payload]

    @cached_property
    def checksum(self) -> str:
        """SHA-256 of the array contents (independent of the file layout)."""
        return arrays_checksum(self.arrays)

    def with_payload(self, payload: np.ndarray) -> "Dataset":
        """The same dataset with the payload replaced (e.g. by its decompressed version)."""
        if payload.shape != self.payload_array.shape:
            raise ValueError(
                f"payload shape {payload.shape} differs from the raw {self.payload_array.shape}"
            )
        arrays = dict(self.arrays)
        arrays[self.payload] = payload
        return dataclasses.replace(self, arrays=arrays)


Result = dict[str, np.ndarray]


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

        Raises ``lossbound.errors.InputError`` with a one-line message for missing/bad files.
        """

    def prepare(self, raw: Dataset) -> dict[str, Any]:
        """Parameters derived once from the raw data and reused for every compressed run
        (e.g. the rotation centre), so differences come from compression only. JSON-able."""
        return {}

    @abc.abstractmethod
    def run(self, data: Dataset, prepared: Mapping[str, Any]) -> Result:
        """The science result (e.g. reconstructed slices) as named arrays."""

    def figure(self, raw: Result, compressed: Result, *, title: str = ""):
        """A matplotlib figure comparing raw and compressed results (or None)."""
        return None

    def describe(self) -> dict[str, Any]:
        """Parameters to log (backend, versions); part of the raw-result cache key."""
        return {"technique": self.name, **self.config}
