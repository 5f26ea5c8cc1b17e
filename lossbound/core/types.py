"""The data types every floor shares: a dataset, a science result, an outcome, a point result."""
from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Any, Mapping

import numpy as np

from lossbound.core.hashing import arrays_checksum

__all__ = ["Dataset", "Outcome", "PointResult", "Result"]

Result = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Arrays of one measurement, with the one array a detector writes marked as ``payload``.

    Only the payload is compressed; everything else (angles, flats, geometry) is kept exact.
    ``mask`` (optional) marks the payload's valid pixels (True = valid); it broadcasts
    against the payload (one frame mask for a stack) and evaluators may restrict to it.
    """

    name: str
    arrays: Mapping[str, np.ndarray]
    payload: str
    source: str
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.payload not in self.arrays:
            raise ValueError(f"payload {self.payload!r} is not one of the arrays {sorted(self.arrays)}")
        if self.mask is not None:
            mask = np.asarray(self.mask, dtype=bool)
            try:
                np.broadcast_shapes(mask.shape, self.payload_array.shape)
            except ValueError:
                raise ValueError(
                    f"mask shape {mask.shape} does not broadcast to the payload {self.payload_array.shape}"
                ) from None
            object.__setattr__(self, "mask", mask)

    @property
    def payload_array(self) -> np.ndarray:
        return self.arrays[self.payload]

    @property
    def geometry(self) -> Mapping[str, Any] | None:
        """The detector geometry (pyFAI PONI fields) of techniques that have one: what a
        codec with a detector model (the Bragg-preserving reduction) needs besides the array."""
        return self.meta.get("geometry")

    @cached_property
    def checksum(self) -> str:
        """SHA-256 of the array contents and mask (independent of the file layout)."""
        arrays = dict(self.arrays)
        if self.mask is not None:
            arrays["__mask__"] = self.mask
        return arrays_checksum(arrays)

    def with_payload(self, payload: np.ndarray) -> "Dataset":
        """The same dataset with the payload replaced (e.g. by its decompressed version)."""
        if payload.shape != self.payload_array.shape:
            raise ValueError(
                f"payload shape {payload.shape} differs from the raw {self.payload_array.shape}"
            )
        arrays = dict(self.arrays)
        arrays[self.payload] = payload
        new = dataclasses.replace(self, arrays=arrays)
        new.__dict__.pop("checksum", None)  # cached_property copied by replace(): content changed
        return new


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A dataset (raw or decompressed) and the science result computed from it."""

    data: Dataset
    result: Result


@dataclasses.dataclass
class PointResult:
    """Everything recorded for one (dataset, codec setting, pipeline, evaluators) point.

    ``status`` is ``"ok"`` or ``"failed"`` (the codec or pipeline crashed or raised; ``reason``
    says why). ``passed`` is True only for an ok point whose bound held and whose metrics are
    all inside the tolerances. ``preview`` holds small arrays for a figure (never journaled).
    ``output_sha256`` is the digest of the decompressed payload; ``same_output_as`` names the
    earlier point of the context whose decompressed payload was bit-identical, whose pipeline
    result (metrics, preview) this point shares instead of computing it again.
    ``frame_metrics`` holds the per-frame metrics (one value per frame), judged frame by frame;
    ``uses`` each criterion's use of its allowance at the last judgement (<= 1 inside).
    """

    point_id: str
    label: str
    setting: dict[str, Any]
    lossy: bool
    status: str = "ok"
    reason: str | None = None
    codec: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    frame_metrics: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    uses: dict[str, float] = dataclasses.field(default_factory=dict)
    passed: bool = False
    failures: list[str] = dataclasses.field(default_factory=list)
    run_id: str | None = None
    seconds: float = 0.0
    context: str = ""
    dataset: str = ""
    reused: bool = False
    output_sha256: str | None = None
    same_output_as: str | None = None
    preview: dict[str, Any] | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def value(self) -> float | None:
        return self.setting.get("value")

    @property
    def group(self) -> tuple:
        """Points that differ only in their bound value form one sweep curve."""
        s = self.setting
        chunks = s.get("chunks")
        return (s.get("codec"), s.get("mode"), s.get("input_dtype"),
                tuple(chunks) if isinstance(chunks, list) else chunks)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (no preview arrays)."""
        d = dataclasses.asdict(dataclasses.replace(self, preview=None))
        d.pop("preview")
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PointResult":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
