"""HDF5 codec layer: every round trip is a real h5py write/read through hdf5plugin filters.

(``lossbound.codecs``: absolute imports keep it apart from the standard library's ``codecs``.)

Public API
----------
CODECS                 registry of :class:`CodecSpec` (one module per codec family in :mod:`lossbound.codecs.filters`)
CodecSpec              static description of one hdf5plugin filter
CodecSetting           one codec/mode/value/input_dtype/chunks point of a sweep
settings_from_config   one CodecSetting per bound of a codec config
roundtrip              compress into an in-memory HDF5 file and read back -> RoundTrip
filter_from_options    rebuild a filter from (filter_id, stored cd_values)
filter_from_config     rebuild a filter from (plugin_class, kwargs)
write_payload          write a payload through a codec chain (masked pixels kept apart)
read_payload           read it back with the masked pixels restored
TRANSFORMS             registry of chain pre-transforms (the noise quantiser, the Bragg sparsification)
time_setting           compress and decompress MB/s of a chain on one quiet core (lossbound.codecs.timing)
CodecWorker            run round trips in a reusable crash-isolated process
CodecCrash             the worker died or timed out
"""
from __future__ import annotations

from .hdf5 import RoundTrip, filter_from_config, filter_from_options, roundtrip
from .specs import CODECS, CodecSetting, CodecSpec, settings_from_config
from .store import chain_description, read_payload, write_payload
from .timing import time_setting
from .transforms import TRANSFORMS
from .worker import CodecCrash, CodecWorker

__all__ = [
    "CODECS",
    "CodecCrash",
    "CodecSetting",
    "CodecSpec",
    "CodecWorker",
    "TRANSFORMS",
    "chain_description",
    "read_payload",
    "write_payload",
    "RoundTrip",
    "filter_from_config",
    "filter_from_options",
    "roundtrip",
    "settings_from_config",
    "time_setting",
]
