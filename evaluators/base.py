"""Evaluator interface and the helpers every evaluator shares."""
from __future__ import annotations

import abc
from typing import Any, Mapping

import numpy as np

from lossbound.core.errors import ConfigError
from lossbound.core.masks import circle_mask
from lossbound.core.types import Outcome

__all__ = ["Evaluator", "Outcome", "check_mask_param", "mask_for", "reject_unknown", "result_array"]


class Evaluator(abc.ABC):
    """Compares outcomes; configured once from keyword parameters.

    ``reference`` runs once per dataset on the raw outcome (e.g. segmentation thresholds,
    raw FRC resolution) and its output is handed to every ``compare`` call. ``metrics``
    names every key ``compare`` returns, so two evaluators writing the same metric are
    caught as a configuration error before a study starts.
    """

    name: str = ""
    #: how a metric scales with the amplitude of an error in the data: 1 (linear: shifts,
    #: changes, fractions lost) or 2 (quadratic: chi-squared, 1 - correlation), or a measured
    #: power where neither holds; unlisted = 1. A noise-referenced tolerance allows f**power
    #: times the noise effect for an error of f times the noise's amplitude
    #: (tests/test_scaling.py measures each declaration).
    scaling: Mapping[str, float] = {}

    def __init__(self, **params: Any) -> None:
        self.params = params

    def powers(self) -> dict[str, float]:
        """:attr:`scaling` under the metric names this instance writes (prefixes applied)."""
        return dict(self.scaling)

    def reference(self, raw: Outcome) -> dict[str, Any]:
        return {}

    @abc.abstractmethod
    def compare(self, raw: Outcome, compressed: Outcome, reference: Mapping[str, Any]) -> dict[str, float]:
        """Metric name -> value (floats; NaN where undefined)."""


def reject_unknown(evaluator: str, extra: Mapping[str, Any]) -> None:
    if extra:
        raise ConfigError(
            f"evaluator {evaluator!r}: unknown parameter(s) {', '.join(sorted(extra))}"
        )


def check_mask_param(evaluator: str, mask: Any) -> None:
    """``mask`` is null, 'circle', or the name of a boolean array the data carries."""
    if mask is not None and (not isinstance(mask, str) or not mask):
        raise ConfigError(
            f"evaluator {evaluator!r}: mask must be null, 'circle' or the name of a boolean array "
            f"in the result or dataset, got {mask!r}"
        )


def result_array(outcome: Outcome, key: str, evaluator: str) -> np.ndarray:
    """``outcome.result[key]`` or a ConfigError naming the keys that exist."""
    try:
        return np.asarray(outcome.result[key])
    except KeyError:
        raise ConfigError(
            f"evaluator {evaluator!r}: result has no key {key!r}; "
            f"available: {', '.join(sorted(outcome.result)) or 'none'}"
        ) from None


def mask_for(mask: str | None, shape: tuple[int, ...], raw: Outcome | None = None,
             *, evaluator: str = "") -> np.ndarray | None:
    """The mask an evaluator's ``mask`` parameter names, for images of ``shape``.

    ``None``: all pixels. ``'circle'``: the inscribed circle of the last two axes. Any other
    name: a boolean array of the raw result, else of the raw dataset (``'payload_mask'`` is
    the dataset's valid-pixel mask); it must broadcast to ``shape``.
    """
    if mask is None:
        return None
    if mask == "circle":
        return circle_mask(shape)
    found = None
    if raw is not None:
        if mask in raw.result:
            found = raw.result[mask]
        elif mask == "payload_mask" and raw.data.mask is not None:
            found = raw.data.mask
        elif mask in raw.data.arrays:
            found = raw.data.arrays[mask]
    if found is None:
        available = sorted(raw.result) + sorted(raw.data.arrays) if raw is not None else []
        raise ConfigError(
            f"evaluator {evaluator!r}: mask {mask!r} is neither 'circle' nor an array of the data; "
            f"available: {', '.join(available) or 'none'}"
        )
    found = np.asarray(found)
    if found.dtype != bool:
        raise ConfigError(f"evaluator {evaluator!r}: mask {mask!r} has dtype {found.dtype}; expected bool")
    try:
        np.broadcast_shapes(found.shape, tuple(shape))
    except ValueError:
        raise ConfigError(
            f"evaluator {evaluator!r}: mask {mask!r} of shape {found.shape} does not fit images of shape {tuple(shape)}"
        ) from None
    return found
