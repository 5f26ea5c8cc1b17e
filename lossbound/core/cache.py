"""On-disk cache of raw-data results, keyed by dataset checksum and pipeline description.

The raw result is computed once per dataset and pipeline and reused for every error bound,
by every worker process, across the jobs of a Hydra multirun and across later studies.
Concurrent jobs computing the same entry are serialised by a file lock, so it is computed once.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from filelock import FileLock

from lossbound.core.files import atomic_path
from lossbound.core.hashing import stable_hash

log = logging.getLogger(__name__)


class ResultCache:
    """``get_or_compute(key_obj, fn)`` -> (prepared, result, hit), stored as ``<hash>.npz``."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = Path(directory) if directory else None

    def key(self, key_obj: Mapping[str, Any]) -> str:
        return stable_hash(key_obj, length=24)

    def _load(self, path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                prepared = json.loads(str(z["__prepared__"]))
                result = {k: z[k] for k in z.files if k != "__prepared__"}
            return prepared, result
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable cache entry %s (%s)", path, exc)
            return None

    def get_or_compute(
        self,
        key_obj: Mapping[str, Any],
        compute: Callable[[], tuple[dict[str, Any], dict[str, np.ndarray]]],
    ) -> tuple[dict[str, Any], dict[str, np.ndarray], bool]:
        """Returns ``(prepared, result, hit)``; a corrupt cache entry is recomputed."""
        if self.directory is None:
            return (*compute(), False)
        path = self.directory / f"{self.key(key_obj)}.npz"
        self.directory.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            loaded = self._load(path)
            if loaded is not None:
                log.info("raw result loaded from cache %s", path.name)
                return (*loaded, True)
            prepared, result = compute()
            with atomic_path(path, suffix=".npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, __prepared__=np.array(json.dumps(prepared)), **result)
        return prepared, result, False

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
