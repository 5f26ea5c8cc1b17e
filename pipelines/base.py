"""What every technique pipeline provides to the sweep."""
from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from lossbound.core.errors import NotApplicable
from lossbound.core.gates import GateCheck
from lossbound.core.noise import is_counts, poisson_resample
from lossbound.core.types import Dataset, Result

__all__ = ["Dataset", "Result", "SimulationTruth", "Technique", "dataset_name"]

_COMPRESSION_SUFFIXES = {".bz2", ".gz", ".xz"}


def dataset_name(cfg: Mapping[str, Any], path: Any) -> tuple[str, bool]:
    """A dataset's name and whether it was given: ``dataset.name``, else the stem of its file
    (``scan.h5`` -> ``scan``, ``frame.cbf.bz2`` -> ``frame``) or folder, or the folder of a
    glob (``/data/run7/*.cbf`` -> ``run7``)."""
    if cfg.get("name"):
        return str(cfg["name"]), True
    from pathlib import Path

    p = Path(str(path))
    if any(ch in p.name for ch in "*?["):
        return p.parent.name or "dataset", False
    if p.suffix in _COMPRESSION_SUFFIXES:
        p = p.with_suffix("")
    return (p.name if p.is_dir() else p.stem) or "dataset", False


@dataclasses.dataclass(frozen=True)
class SimulationTruth:
    """What a built-in simulation knows that a measurement does not: the noise-free
    measurement (``noise_free``: the expected counts, with the detector's defects and masks)
    and independent measurements of the same sample (``measure(rng)``), so the true effect of
    one dose of counting noise on a science result can be measured
    (:mod:`lossbound.study.calibrate`). ``note`` says what differs between measurements."""

    noise_free: Dataset
    measure: Callable[[np.random.Generator], Dataset]
    note: str = ""


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
    #: show per-frame progress bars (on a terminal): the study sets it while the raw result is
    #: computed in the foreground, never in worker processes
    progress: bool = False

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

    def raw_result(self, raw: Dataset) -> tuple[dict[str, Any], Result]:
        """:meth:`prepare` and the raw data's result, computed once per dataset (and cached
        by the study). A technique whose preparation already runs the pipeline on the raw data
        returns that result instead of running it again."""
        prepared = self.prepare(raw)
        return prepared, self.run(raw, prepared)

    def report_extras(self, prepared: Mapping[str, Any]) -> dict[str, Any]:
        """What the thresholds file keeps beside a dataset's thresholds, from :meth:`prepare`
        (e.g. what storing only a reduced result would give). JSON-able; default: nothing."""
        return {}

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

    def noise_checks(self, data: Dataset) -> dict[str, Any]:
        """Whether the data behave as the noise model assumes (recorded beside the noise
        reference; ``warning`` set when they do not). Default: nothing to check."""
        return {}

    #: this technique's quality gates and their default settings (``action`` and limits;
    #: ``technique.gates`` overrides them): :meth:`gates` measures them
    gate_defaults: Mapping[str, Mapping[str, Any]] = {}

    def gates(self, data: Dataset, prepared: Mapping[str, Any], result: Result,
              settings: Mapping[str, Mapping[str, Any]], *, references: Mapping[str, Any]) -> list[GateCheck]:
        """How well the raw data fit the declared setup, measured on the raw result once per
        dataset, before any noise reference or search (:mod:`lossbound.core.gates`).
        ``settings`` are the gates' resolved settings (a gate with ``action: off`` is not
        measured); ``references`` the evaluators' references of the raw result, by evaluator
        key. Default: no gate."""
        return []

    def data_key(self, data: Dataset) -> dict[str, Any]:
        """What besides the arrays' content and :meth:`describe` the result depends on (part
        of the raw-result cache key and of every point id), e.g. a gain from the dataset."""
        return {}

    def simulation_truth(self, data: Dataset) -> SimulationTruth | None:
        """For data this technique's built-in simulation wrote (``meta['simulation']``): its
        noise-free measurement and a source of independent ones; None for other data."""
        return None

    def truth_result(self, noise_free: Dataset, prepared: Mapping[str, Any]) -> Result:
        """The true science result: the pipeline on the noise-free measurement (a technique
        whose pipeline is not defined on noise-free data overrides this)."""
        return self.run(noise_free, prepared)

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
