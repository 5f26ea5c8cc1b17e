"""The outcome of one evaluation point: one codec setting applied to one dataset."""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class PointResult:
    """Everything recorded for one (dataset, codec setting, pipeline) point.

    ``status`` is ``"ok"`` or ``"failed"`` (the codec or pipeline crashed or raised; ``reason``
    says why). ``passed`` is True only for an ok point whose bound held and whose metrics are
    all inside the tolerances.
    """

    point_id: str
    label: str
    setting: dict[str, Any]
    lossy: bool
    status: str = "ok"
    reason: str | None = None
    codec: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    passed: bool = False
    failures: list[str] = dataclasses.field(default_factory=list)
    run_id: str | None = None
    seconds: float = 0.0

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
