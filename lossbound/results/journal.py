"""The journal: every finished point, appended under a file lock, keyed by point_id.

One JSON line per point in ``runs/journal/<technique>.jsonl``. Appends are single
``write`` calls of whole lines under a :class:`filelock.FileLock`, flushed and fsynced, so
parallel jobs never lose each other's points; a line cut short by ``kill -9`` is skipped on
reading. A re-run reads the journal and skips every point it already holds.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable

from filelock import FileLock

from lossbound.core.types import PointResult

log = logging.getLogger(__name__)


class Journal:
    """Append-only record of finished points for one technique.

    Parameters
    ----------
    path : path-like or None
        The ``.jsonl`` file; None keeps nothing (every point is computed).
    """

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path else None
        self._lock = FileLock(str(self.path) + ".lock") if self.path else None

    def append(self, point: PointResult) -> None:
        if self.path is None:
            return
        line = json.dumps(point.to_dict(), default=str, separators=(",", ":")) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            with open(self.path, "a+b") as fh:
                # a line cut short by a kill must not swallow the next one
                if fh.tell() > 0:
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        line = "\n" + line
                fh.write(line.encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())

    def read(self, *, context: str | None = None) -> dict[str, PointResult]:
        """point_id -> the newest record (only those of ``context`` if given)."""
        out: dict[str, PointResult] = {}
        if self.path is None or not self.path.exists():
            return out
        with self._lock:
            text = self.path.read_text(encoding="utf-8")
        bad = 0
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                p = PointResult.from_dict(json.loads(line))
            except (ValueError, TypeError):
                bad += 1  # a line cut short by a kill: that point is simply recomputed
                continue
            if context is None or p.context == context:
                out[p.point_id] = p
        if bad:
            log.warning("journal %s: skipped %d unreadable line(s)", self.path, bad)
        return out

    def extend(self, points: Iterable[PointResult]) -> None:
        for p in points:
            self.append(p)
