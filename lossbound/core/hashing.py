"""Stable hashes: dataset content checksums and evaluation-point identities."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

import numpy as np


def _default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    raise TypeError(f"cannot hash object of type {type(obj).__name__}")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal configs hash equally."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_default)


def stable_hash(obj: Any, *, length: int = 16) -> str:
    """Hex digest of the canonical JSON of ``obj`` (dicts, lists, scalars)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def arrays_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``arrays`` (content, not file layout)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.reshape(-1).view(np.uint8) if a.size else b"")  # the bytes, not a copy of them
    return h.hexdigest()
