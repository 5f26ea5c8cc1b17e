"""On-disk cache of raw-data results, keyed by dataset checksum and pipeline description.

The raw result is computed once per dataset and pipeline and reused for every error bound,
also across the jobs of a Hydra multirun and across later sweeps.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from lossbound.hashing import stable_hash

log = logging.getLogger(__name__)


class ResultCache:
    """``get_or_compute(key_obj, fn)`` -> (prepared, result), stored as ``<hash>.npz``."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = Path(directory) if directory else None

    def key(self, key_obj: Mapping[str, Any]) -> str:
        return stable_hash(key_obj, length=24)

    def get_or_compute(
        self,
        key_obj: Mapping[str, Any],
        compute: Callable[[], tuple[dict[str, Any], dict[str, np.ndarray]]],
    ) -> tuple[dict[str, Any], dict[str, np.ndarray], bool]:
        """Returns ``(prepared, result, hit)``; a corrupt cache entry is recomputed."""
        key = self.key(key_obj)
        path = self.directory / f"{key}.npz" if self.directory else None
        if path is not None and path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    prepared = json.loads(str(z["__prepared__"]))
                    result = {k: z[k] for k in z.files if k != "__prepared__"}
                log.info("raw result loaded from cache %s", path.name)
                return prepared, result, True
            except (OSError, ValueError, KeyError) as exc:
                log.warning("ignoring unreadable cache entry %s (%s)", path, exc)
        prepared, result = compute()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, __prepared__=np.array(json.dumps(prepared)), **result)
            os.replace(tmp, path)
        return prepared, result, False
