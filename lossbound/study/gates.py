"""Quality gates on the raw result, before any counting-noise reference or search.

The technique measures its gates (:meth:`lossbound.pipelines.base.Technique.gates`); this module
applies ``technique.gates.<name>.action``: a passed gate is recorded, a failed ``warn`` gate
is logged and recorded (MLflow, thresholds file, report) and the study goes on, a failed
``refuse`` gate stops the study in one line naming the setting to check and the likely fix.
The measurements are cached beside the raw result (they depend on the data, the pipeline and
the gates' limits, not on their actions).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Mapping

from lossbound.core.errors import GateRefused
from lossbound.core.gates import GateCheck, gate_settings
from lossbound.core.cache import ResultCache
from lossbound.study.context import RawPart, data_key

__all__ = ["GateReport", "check_gates"]

log = logging.getLogger(__name__)

#: what the gates measure (part of their cache key)
GATES_VERSION = 3  # 3: azint orientation passes when the rings are concentric about the PONI and the flip moves it


@dataclasses.dataclass(frozen=True)
class GateReport:
    """The gates of one dataset: ``records`` (name -> :meth:`GateCheck.record`) and the
    warnings (one line each)."""

    records: dict[str, dict[str, Any]]
    warnings: list[str]
    seconds: float

    @property
    def statuses(self) -> dict[str, str]:
        return {name: r["status"] for name, r in self.records.items()}


def check_gates(part: RawPart, config: Mapping[str, Any] | None, *, cache_dir: str | None = None) -> GateReport:
    """Measure and apply the technique's gates on the raw result of ``part``.

    Raises :class:`~lossbound.core.errors.GateRefused` (one line) when a ``refuse`` gate fails.
    """
    technique, data = part.technique, part.raw.data
    settings = gate_settings(technique.gate_defaults, config, technique=technique.name)
    limits = {name: {k: v for k, v in s.items() if k != "action"} for name, s in settings.items()
              if s["action"] != "off"}
    t0 = time.perf_counter()

    def compute() -> dict[str, Any]:
        checks = technique.gates(data, part.prepared, part.raw.result, settings, references=part.references)
        return {"checks": [dataclasses.asdict(c) for c in checks]}

    doc, _ = ResultCache(cache_dir).get_or_compute_json(
        {"gates": GATES_VERSION, "dataset": data.checksum, "pipeline": technique.describe(), "limits": limits,
         **data_key(technique, data)}, compute)
    checks = [GateCheck(**c) for c in doc["checks"]]
    records: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    for check in checks:
        action = settings[check.name]["action"]
        records[check.name] = check.record(action)
        value, limit = check.value_text, check.limit_text
        line = f"gate {technique.name}.{check.name} on {data.name}: {value} (limit {limit}): {check.detail}"
        if check.passed is None:
            log.info("%s (not measured)", line)
        elif check.passed:
            log.info("%s: passed", line)
        elif action == "refuse":
            raise GateRefused(f"{data.name}: gate {check.name} refused ({value}, limit {limit}): "
                              f"{check.fix} [technique.gates.{check.name}.action=warn to go on]")
        else:
            warnings.append(f"gate {check.name}: {value} (limit {limit}): {check.fix}")
            log.warning("%s: WARNING: %s", line, check.fix)
    return GateReport(records, warnings, time.perf_counter() - t0)
