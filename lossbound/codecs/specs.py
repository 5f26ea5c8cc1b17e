"""Codec specifications and codec settings.

A :class:`CodecSpec` describes one hdf5plugin filter (which keyword each of our modes maps
to, which modes are safe on which dtypes); a :class:`CodecSetting` is one concrete point of a
sweep (codec, mode, value, dtype conversion, chunking). Adding a codec means adding one
module to :mod:`lossbound.codecs.filters` that calls ``register(CodecSpec(...))``, plus its
``conf/codec/<name>.yaml``.

Everything here is pure Python: nothing touches a compression library, so invalid settings
are refused before a C codec can crash or silently corrupt the process.
"""
from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union

import hdf5plugin
import numpy as np

from lossbound.core.errors import ConfigError
from lossbound.core.hashing import stable_hash
from lossbound.core.registry import Registry

__all__ = [
    "CODECS",
    "Chunks",
    "CodecSetting",
    "CodecSpec",
    "filter_from_config",
    "settings_from_config",
]

Chunks = Union[tuple[int, ...], Literal["all"], None]


def _frozen_mapping(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return types.MappingProxyType(dict(obj or {}))


@dataclasses.dataclass(frozen=True)
class CodecSpec:
    """Static description of one HDF5 compression filter.

    Parameters
    ----------
    name : str
        Registry name (``sz3``, ``zfp``, ...).
    plugin_class : str
        Attribute name of the filter class in :mod:`hdf5plugin`.
    modes : Mapping[str, str]
        Our mode name -> hdf5plugin keyword (``{"absolute": "accuracy"}`` for ZFP).
    lossy : bool
        False for lossless codecs (their optional modes are tuning knobs like ``clevel``).
    float_only : bool
        The codec needs float32/float64 input (it rejects, wraps around or crashes on ints).
    int_unsafe_modes : frozenset of str
        Modes that must never see integer data (e.g. they call ``exit(0)`` on it).
    bounded_modes : frozenset of str
        Modes whose value is a maximum absolute error that :func:`roundtrip` verifies.
    integer_modes : frozenset of str
        Modes whose value must be an integer (compression levels, ZFP precision bits).
    less_loss_modes : frozenset of str
        Modes whose larger values mean LESS loss (PSNR targets, rates, precision bits); in
        every other mode a larger value means more loss. Threshold searches honour it.
    sigma_modes : frozenset of str
        Modes whose value bounds the error relative to each pixel's Poisson sigma:
        ``|error| <= sigma_error_per_value * value * sqrt(count)``, checked after the round trip.
    sigma_error_per_value : float
        See ``sigma_modes`` (0.5 for the noise quantiser, whose value is a step of f sigma).
    transform : str or None
        Pre-transform of the chain (name in ``lossbound.codecs.transforms.TRANSFORMS``) applied
        before the filter; its modes map to the transform's keyword, not the filter's.
    transform_kwargs : Mapping[str, Any]
        Fixed parameters of the pre-transform (beside the searched one).
    needs_geometry : bool
        The pre-transform models the frame from the detector geometry (pyFAI): the codec
        applies to datasets that carry one (diffraction), not to tomography.
    integer_only : bool
        The chain needs integer counts (the noise quantiser).
    fixed_kwargs : Mapping[str, Any]
        Keyword arguments always passed to the filter class; a mode keyword overrides them.
    notes : str
        One line on quirks found while testing the codec.
    """

    name: str
    plugin_class: str
    modes: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)
    lossy: bool = True
    float_only: bool = False
    int_unsafe_modes: frozenset[str] = frozenset()
    bounded_modes: frozenset[str] = frozenset()
    integer_modes: frozenset[str] = frozenset()
    less_loss_modes: frozenset[str] = frozenset()
    sigma_modes: frozenset[str] = frozenset()
    sigma_error_per_value: float = 1.0
    transform: str | None = None
    transform_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    needs_geometry: bool = False
    integer_only: bool = False
    fixed_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    notes: str = ""

    def __post_init__(self) -> None:
        # Read-only views: specs are shared module-level singletons.
        object.__setattr__(self, "modes", _frozen_mapping(self.modes))
        object.__setattr__(self, "fixed_kwargs", _frozen_mapping(self.fixed_kwargs))
        for attr in ("int_unsafe_modes", "bounded_modes", "integer_modes", "less_loss_modes", "sigma_modes"):
            modes = frozenset(getattr(self, attr))
            unknown = modes - set(self.modes)
            if unknown:
                raise ValueError(f"codec {self.name!r}: {attr} {sorted(unknown)} are not in modes")
            object.__setattr__(self, attr, modes)
        if not hasattr(hdf5plugin, self.plugin_class):
            raise ValueError(f"codec {self.name!r}: hdf5plugin has no filter class {self.plugin_class!r}")

    @property
    def filter_class(self) -> type:
        """The hdf5plugin filter class."""
        return getattr(hdf5plugin, self.plugin_class)


def filter_from_config(plugin_class: str, kwargs: Mapping[str, Any]) -> Any:
    """``getattr(hdf5plugin, plugin_class)(**kwargs)`` with one-line errors.

    The one way a filter is built from a class name and keyword arguments: by codec
    settings and from thresholds-file entries alike.
    """
    cls = getattr(hdf5plugin, plugin_class, None)
    if not isinstance(cls, type):
        raise ConfigError(f"hdf5plugin has no filter class {plugin_class!r}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"rejected by hdf5plugin.{plugin_class}(**{dict(kwargs)!r}): {msg}") from exc



#: every codec by name, one module per codec family in :mod:`lossbound.codecs.filters`
CODECS: Registry[CodecSpec] = Registry("codec", package="lossbound.codecs.filters")


def register(spec: CodecSpec) -> CodecSpec:
    """Add ``spec`` to :data:`CODECS` (called by the modules of :mod:`lossbound.codecs.filters`)."""
    return CODECS.register(spec.name)(spec)


def _is_integer_dtype(dtype: np.dtype) -> bool:
    return dtype.kind in "iub"


def _as_dtype(value: Any, *, what: str, kinds: str = "iuf") -> np.dtype:
    """``value`` as a numpy dtype of one of ``kinds``, or a ConfigError naming ``what``."""
    try:
        dtype = np.dtype(value)
    except TypeError as exc:
        raise ConfigError(f"{what} {value!r} is not a numpy dtype; expected e.g. 'float32'") from exc
    if dtype.kind not in kinds:
        raise ConfigError(f"{what} {value!r} is not an integer or float dtype")
    return dtype


def _normalise_dtype(value: Any, *, what: str) -> str:
    return _as_dtype(value, what=what).name


def _normalise_chunks(chunks: Any) -> Chunks:
    if chunks is None:
        return None
    if isinstance(chunks, str):
        if chunks != "all":
            raise ConfigError(f"chunks {chunks!r} is invalid; expected null, 'all' or a list of positive ints")
        return "all"
    if hasattr(chunks, "__iter__"):
        items = list(chunks)
        try:
            ok = bool(items) and all(
                not isinstance(c, bool) and float(c).is_integer() and int(c) > 0 for c in items
            )
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"chunks {items!r} is invalid; expected a list of positive ints")
        return tuple(int(c) for c in items)
    raise ConfigError(f"chunks {chunks!r} is invalid; expected null, 'all' or a list of positive ints")


def _normalise_value(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"codec value {value!r} is a boolean; expected a number")
    try:
        # float() also accepts YAML 1.1 strings like '1e-3' that PyYAML leaves unparsed.
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"codec value {value!r} is not a number") from exc
    if not math.isfinite(out):
        raise ConfigError(f"codec value {value!r} is not finite")
    return out


@dataclasses.dataclass(frozen=True)
class CodecSetting:
    """One codec configuration: what is compressed, how, and in which chunk layout.

    Parameters
    ----------
    codec : str
        Name in :data:`CODECS`.
    mode : str or None
        Mode name of the codec spec; None for a lossless codec at its defaults.
    value : float or None
        Mode value (error bound, rate, PSNR, compression level).
    input_dtype : str or None
        Explicit conversion applied before compression (``'float32'``); None keeps the
        detector dtype. Errors are always measured against the unconverted data.
    chunks : tuple of int, 'all' or None
        None: one frame per chunk (``(1, *shape[1:])``) for ndim >= 3, whole array for
        ndim <= 2. ``'all'``: the whole array is one chunk. A tuple: that chunk shape
        (clipped to the data shape).
    """

    codec: str
    mode: str | None = None
    value: float | None = None
    input_dtype: str | None = None
    chunks: Chunks = None

    def __post_init__(self) -> None:
        # Normalise so equal settings compare, hash and key equally ([1,2] vs (1,2), 'f4' vs 'float32', 4 vs 4.0).
        object.__setattr__(self, "value", _normalise_value(self.value))
        if self.input_dtype is not None:
            object.__setattr__(self, "input_dtype", _normalise_dtype(self.input_dtype, what="input_dtype"))
        object.__setattr__(self, "chunks", _normalise_chunks(self.chunks))

    # -- derived -------------------------------------------------------------------------
    @property
    def spec(self) -> CodecSpec:
        """The registered :class:`CodecSpec` (ConfigError for an unknown codec)."""
        return CODECS.get(self.codec)

    @property
    def bounded(self) -> bool:
        """True when ``value`` is a max-absolute-error bound checked after the round trip."""
        return self.mode is not None and self.mode in self.spec.bounded_modes

    @property
    def bound_kind(self) -> str | None:
        """'absolute' (counts), 'poisson_sigma' (a multiple of each pixel's sqrt(count)) or
        None (no per-pixel bound: rate, PSNR, ... or lossless)."""
        if self.mode is None:
            return None
        if self.mode in self.spec.bounded_modes:
            return "absolute"
        if self.mode in self.spec.sigma_modes:
            return "poisson_sigma"
        return None

    @property
    def loss_grows_with_value(self) -> bool:
        """True when a larger ``value`` means more loss (error bounds); False for PSNR
        targets, rates and precision bits."""
        return self.mode not in self.spec.less_loss_modes

    @property
    def integer_valued(self) -> bool:
        """True when the mode takes integer values only."""
        return self.mode is not None and self.mode in self.spec.integer_modes

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``'sz3 absolute=4'``."""
        text = self.codec
        if self.mode is not None:
            text += f" {self.mode}={self.value:g}" if self.value is not None else f" {self.mode}"
        extras = []
        if self.input_dtype is not None:
            extras.append(self.input_dtype)
        if self.chunks is not None:
            extras.append("chunks=" + ("all" if self.chunks == "all" else "x".join(map(str, self.chunks))))
        if extras:
            text += f" ({', '.join(extras)})"
        return text

    @property
    def key(self) -> str:
        """Stable hash of :meth:`as_dict` (identity of an evaluation point)."""
        return stable_hash(self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        """JSON-able dict; ``CodecSetting.from_dict(s.as_dict()) == s``."""
        return {
            "codec": self.codec,
            "mode": self.mode,
            "value": self.value,
            "input_dtype": self.input_dtype,
            "chunks": list(self.chunks) if isinstance(self.chunks, tuple) else self.chunks,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CodecSetting:
        """Inverse of :meth:`as_dict`."""
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"codec setting has unknown keys {sorted(unknown)}")
        if "codec" not in d:
            raise ConfigError("codec setting has no 'codec' key")
        return cls(**d)

    # -- validation ----------------------------------------------------------------------
    def validate(self, dtype: Any = None, *, has_geometry: bool | None = None) -> None:
        """Refuse settings that are meaningless or would crash/corrupt the codec.

        Parameters
        ----------
        dtype : numpy dtype-like, optional
            Detector dtype of the data to be compressed. When None only the
            dtype-independent checks run.
        has_geometry : bool, optional
            Whether the data come with a detector geometry; False refuses codecs that need
            one. None skips the check.

        Raises
        ------
        ConfigError
            Unknown codec or mode, missing/invalid value, float-only codec on integer
            data without ``input_dtype: float32``, integer-unsafe mode on integer data.
        """
        spec = self.spec
        label = self.label
        if self.mode is None:
            if spec.lossy:
                raise ConfigError(
                    f"codec {self.codec!r} is lossy and needs a mode; expected one of: {', '.join(spec.modes)}"
                )
            if self.value is not None:
                raise ConfigError(f"codec setting {label!r} has value {self.value:g} but no mode")
        else:
            if self.mode not in spec.modes:
                known = ", ".join(spec.modes) or "none (lossless at defaults: mode null)"
                raise ConfigError(f"unknown mode {self.mode!r} for codec {self.codec!r}; expected one of: {known}")
            if self.value is None:
                raise ConfigError(f"codec setting {label!r} needs a value (bound) for mode {self.mode!r}")
            if spec.lossy and self.value <= 0:
                raise ConfigError(f"codec setting {label!r}: value must be > 0, got {self.value:g}")
            if self.mode in spec.integer_modes and not float(self.value).is_integer():
                raise ConfigError(f"codec setting {label!r}: {self.mode} must be an integer, got {self.value:g}")
        # Constructing the filter object is pure Python and catches hdf5plugin's range checks.
        self.make_filter()

        if has_geometry is False and spec.needs_geometry:
            raise ConfigError(f"codec {self.codec!r} models diffraction frames from the detector geometry, "
                              f"and this dataset has none")
        if dtype is None:
            return
        detector = _as_dtype(dtype, what=f"codec setting {label!r}: data dtype", kinds="iubf")
        stored = np.dtype(self.input_dtype) if self.input_dtype is not None else detector
        if detector.kind == "f" and stored.kind in "iu":
            raise ConfigError(
                f"codec setting {label!r}: input_dtype {stored} would truncate {detector} data; expected a float dtype"
            )
        if spec.integer_only and stored.kind not in "iu":
            raise ConfigError(
                f"codec {self.codec!r} works on integer photon counts but the data is {stored}; "
                f"use a codec with an absolute bound for this data"
            )
        if spec.float_only and stored.name not in ("float32", "float64"):
            raise ConfigError(
                f"codec {self.codec!r} needs float32/float64 input but the data is {stored}; "
                f"set input_dtype: float32"
            )
        if _is_integer_dtype(stored) and self.mode in spec.int_unsafe_modes:
            raise ConfigError(
                f"codec setting {label!r}: mode {self.mode!r} must not see integer data ({stored}); "
                f"set input_dtype: float32 or use another mode"
            )

    # -- filter construction -------------------------------------------------------------
    def plugin_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the hdf5plugin filter class (fixed kwargs + mode keyword)."""
        spec = self.spec
        kwargs = dict(spec.fixed_kwargs)
        if spec.transform is None and self.mode is not None and self.mode in spec.modes:
            value: Any = self.value
            if self.mode in spec.integer_modes and value is not None and float(value).is_integer():
                value = int(value)
            kwargs[spec.modes[self.mode]] = value
        return kwargs

    def transform_params(self) -> dict[str, Any]:
        """Keyword arguments of the chain's pre-transform ({} without one)."""
        spec = self.spec
        if spec.transform is None or self.mode is None or self.value is None:
            return {}
        return {**spec.transform_kwargs, spec.modes[self.mode]: self.value}

    def make_filter(self) -> Any:
        """The hdf5plugin filter object (a mapping usable as ``**filter`` in create_dataset)."""
        try:
            return filter_from_config(self.spec.plugin_class, self.plugin_kwargs())
        except ConfigError as exc:
            raise ConfigError(f"codec setting {self.label!r} {exc}") from exc

    def chunk_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Resolve :attr:`chunks` for data of ``shape``.

        Raises
        ------
        ConfigError
            A chunk tuple whose length differs from ``len(shape)``.
        """
        shape = tuple(int(s) for s in shape)
        if self.chunks == "all" or (self.chunks is None and len(shape) <= 2):
            return shape
        if self.chunks is None:
            return (1, *shape[1:])
        if len(self.chunks) != len(shape):
            raise ConfigError(
                f"chunks {list(self.chunks)} has {len(self.chunks)} dims but the data shape {shape} has {len(shape)}"
            )
        # HDF5 refuses chunks larger than a fixed-size dataset; the clipped shape is recorded.
        return tuple(min(c, s) for c, s in zip(self.chunks, shape))


_CONFIG_KEYS = {"codec", "mode", "bounds", "bracket", "limits", "input_dtype", "chunks", "name", "description"}


def settings_from_config(name: str, cfg: Mapping[str, Any]) -> list[CodecSetting]:
    """Build one :class:`CodecSetting` per bound of a codec config.

    Parameters
    ----------
    name : str
        Config name, used in error messages and as the codec name when ``cfg`` has no
        ``codec`` key.
    cfg : Mapping
        ``{codec: sz3, mode: absolute, bounds: [1, 2, 4], input_dtype: null, chunks: null}``.
        Lossless codecs omit ``mode`` and ``bounds`` (one setting); a lossless tuning mode
        (``mode: clevel``) takes its values from ``bounds``.

    Returns
    -------
    list of CodecSetting
        In the order of ``bounds``; each already passed the dtype-independent validation.
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"codec config {name!r} must be a mapping, got {type(cfg).__name__}")
    unknown = {k for k in cfg if not str(k).startswith("_")} - _CONFIG_KEYS
    if unknown:
        raise ConfigError(
            f"codec config {name!r} has unknown keys {sorted(map(str, unknown))}; expected {sorted(_CONFIG_KEYS)}"
        )
    codec = cfg.get("codec") or name
    mode = cfg.get("mode")
    bounds = cfg.get("bounds")
    common = {"codec": codec, "mode": mode, "input_dtype": cfg.get("input_dtype"), "chunks": cfg.get("chunks")}
    try:
        if bounds is None:
            values: list[Any] = [None]
        elif isinstance(bounds, (str, bytes)) or not hasattr(bounds, "__iter__"):
            values = [bounds]
        else:
            values = list(bounds)
        if mode is not None and (not values or values == [None]):
            raise ConfigError(f"codec config {name!r}: mode {mode!r} needs a non-empty 'bounds' list")
        if mode is None and values != [None]:
            raise ConfigError(f"codec config {name!r} has bounds {values} but no mode")
        settings = [CodecSetting(value=v, **common) for v in values]
        if len({s.value for s in settings}) != len(settings):
            raise ConfigError(f"codec config {name!r} has duplicate bounds {values}")
        for s in settings:
            s.validate()
    except ConfigError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith(f"codec config {name!r}") else f"codec config {name!r}: {msg}") from exc
    return settings
