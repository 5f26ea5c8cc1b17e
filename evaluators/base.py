"""Evaluator interface."""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, Mapping

import numpy as np

from lossbound.errors import ConfigError
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


# Helpers shared by evaluators: parameter checks and result look-up with clear errors.

def reject_unknown(evaluator: str, extra: Mapping[str, Any]) -> None:
    if extra:
        raise ConfigError(
            f"evaluator {evaluator!r}: unknown parameter(s) {', '.join(sorted(extra))}"
        )


def check_mask_param(evaluator: str, mask: Any) -> None:
    if mask not in (None, "circle"):
        raise ConfigError(f"evaluator {evaluator!r}: mask must be null or 'circle', got {mask!r}")


def result_array(outcome: Outcome, key: str, evaluator: str) -> np.ndarray:
    """``outcome.result[key]`` or a ConfigError naming the keys that exist."""
    try:
        return np.asarray(outcome.result[key])
    except KeyError:
        raise ConfigError(
            f"evaluator {evaluator!r}: result has no key {key!r}; "
            f"available: {', '.join(sorted(outcome.result)) or 'none'}"
        ) from None


def mask_for(mask: str | None, shape: tuple[int, ...]) -> np.ndarray | None:
    """The mask named by an evaluator's ``mask`` parameter (None = all pixels)."""
    from evaluators.image import circle_mask

    return circle_mask(shape) if mask == "circle" else None
