"""Evaluator interface."""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, Mapping

from pipelines.base import Dataset, Result


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A dataset (raw or decompressed) and the science result computed from it."""

    data: Dataset
    result: Result


class Evaluator(abc.ABC):
    """Compares outcomes; configured once from keyword parameters.

    ``reference`` runs once per dataset on the raw outcome (e.g. segmentation thresholds,
    raw FRC resolution) and its output is handed to every ``compare`` call.
    """

    name: str = ""

    def __init__(self, **params: Any) -> None:
        self.params = params

    def reference(self, raw: Outcome) -> dict[str, Any]:
        return {}

    @abc.abstractmethod
    def compare(self, raw: Outcome, compressed: Outcome, reference: Mapping[str, Any]) -> dict[str, float]:
        """Metric name -> value (floats; NaN where undefined)."""
