"""On-disk cache of raw-data results, keyed by dataset checksum and pipeline description.

The raw result is computed once per dataset and pipeline and reused for every error bound,
by every worker process, across the jobs of a Hydra multirun and across later studies.
Concurrent jobs computing the same entry are serialised by a file lock, so it is computed once.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from filelock import FileLock

from lossbound.core.files import atomic_path
from lossbound.core.hashing import stable_hash

log = logging.getLogger(__name__)

_META = {"__prepared__", "__seconds__"}  # the cache's own entries beside a result's arrays


class ResultCache:
    """``get_or_compute(key_obj, fn)`` -> (prepared, result, hit, seconds), stored as ``<hash>.npz``."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = Path(directory) if directory else None

    def key(self, key_obj: Mapping[str, Any]) -> str:
        return stable_hash(key_obj, length=24)

    def _load(self, path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray], float] | None:
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                prepared = json.loads(str(z["__prepared__"]))
                seconds = float(z["__seconds__"]) if "__seconds__" in z.files else math.nan
                result = {k: z[k] for k in z.files if k not in _META}
            return prepared, result, seconds
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable cache entry %s (%s)", path, exc)
            return None

    def get_or_compute(
        self,
        key_obj: Mapping[str, Any],
        compute: Callable[[], tuple[dict[str, Any], dict[str, np.ndarray]]],
    ) -> tuple[dict[str, Any], dict[str, np.ndarray], bool, float]:
        """Returns ``(prepared, result, hit, seconds)``: ``seconds`` is what ``compute`` took
        when the entry was made (NaN for entries from before it was recorded), what one more
        run of the pipeline will cost. A corrupt cache entry is recomputed."""
        if self.directory is None:
            t0 = time.perf_counter()
            prepared, result = compute()
            return prepared, result, False, time.perf_counter() - t0
        path = self.directory / f"{self.key(key_obj)}.npz"
        self.directory.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            loaded = self._load(path)
            if loaded is not None:
                log.info("raw result loaded from cache %s", path.name)
                return loaded[0], loaded[1], True, loaded[2]
            t0 = time.perf_counter()
            prepared, result = compute()
            seconds = time.perf_counter() - t0
            if clash := sorted(_META & set(result)):
                raise ValueError(f"a result may not hold the cache's own keys {clash}")
            with atomic_path(path, suffix=".npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, __prepared__=np.array(json.dumps(prepared)), __seconds__=np.array(seconds), **result)
        return prepared, result, False, seconds

    def get_or_compute_json(self, key_obj: Mapping[str, Any], compute: Callable[[], dict[str, Any]]
                            ) -> tuple[dict[str, Any], bool]:
        """A JSON document (e.g. a noise reference) computed once per key: ``(doc, hit)``."""
        if self.directory is None:
            return compute(), False
        path = self.directory / f"{self.key(key_obj)}.json"
        self.directory.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if path.exists():
                try:
                    return json.loads(path.read_text()), True
                except (OSError, ValueError) as exc:
                    log.warning("ignoring unreadable cache entry %s (%s)", path, exc)
            doc = compute()
            with atomic_path(path, suffix=".json") as tmp:
                tmp.write_text(json.dumps(doc, allow_nan=True))
        return doc, False
