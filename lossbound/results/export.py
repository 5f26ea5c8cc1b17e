"""A thresholds entry as what a writer needs: ``create_dataset`` keyword arguments, or a plain
codec configuration for an acquisition system.

Both rebuild the chain through :func:`lossbound.results.thresholds.setting_for`, so an entry this
version cannot reproduce (no threshold, or a codec spec changed since the study) is refused
with a :class:`~lossbound.core.errors.ConfigError` instead of exported.

The keyword arguments reproduce the *filter stage* only. A chain with a pre-transform
(``transform`` not None: the noise quantiser, ``bragg_sparsify``) and data with masked pixels
(detector gaps, sentinels, NaN) need :func:`lossbound.codecs.write_payload`, which applies the
transform and keeps the masked pixels apart losslessly (``lossbound apply`` does it
for a whole file).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from lossbound.results.thresholds import plain, setting_for

__all__ = ["codec_config", "create_dataset_kwargs", "needs_write_payload"]


def needs_write_payload(entry: Mapping[str, Any]) -> bool:
    """True when the entry's chain has a pre-transform that ``create_dataset`` alone skips.

    Parameters
    ----------
    entry : mapping
        A thresholds entry (combined ``doc["codecs"][name]`` or per dataset).

    Returns
    -------
    bool
        ``entry["transform"] is not None``.
    """
    return entry.get("transform") is not None


def create_dataset_kwargs(entry: Mapping[str, Any], *, shape: Sequence[int] | None = None) -> dict[str, Any]:
    """``h5py.Group.create_dataset`` keyword arguments of a thresholds entry's filter stage.

    Parameters
    ----------
    entry : mapping
        A combined entry ``doc["codecs"][name]`` or a per-dataset one
        ``doc["datasets"][ds]["codecs"][name]``.
    shape : sequence of int, optional
        Shape of the data to be written. With it, ``chunks`` is the recorded chunk setting
        resolved for that shape (:meth:`lossbound.codecs.CodecSetting.chunk_shape`: one frame per
        chunk by default, as in the study). Without it, ``chunks`` is given only when the
        setting is an explicit chunk shape; otherwise the key is left out — pass ``shape``,
        since h5py's automatic chunking differs from what the study measured.

    Returns
    -------
    dict
        ``compression`` (the HDF5 filter id) and ``compression_opts`` (its cd_values before
        the filter's ``set_local``) of the hdf5plugin filter rebuilt from the entry, ``dtype``
        (the stored dtype, ``input_dtype``: h5py converts the data on write, e.g. counts to
        ``float32`` for ZFP), and ``chunks`` (see ``shape``). Use as
        ``group.create_dataset(name, data=data, **kwargs)``.

    Raises
    ------
    ConfigError
        The entry has no threshold, or its recorded filter or pre-transform parameters are not
        what this version builds (:func:`~lossbound.results.thresholds.setting_for`).

    Notes
    -----
    These arguments reproduce the filter only. When ``entry["transform"]`` is not None (the
    noise quantiser, ``bragg_sparsify``) the pre-transform is *not* applied, and masked pixels
    would go through the lossy filter; write such data with
    ``lossbound.codecs.write_payload(group, name, data, setting_for(entry), valid=mask)``, or
    ``lossbound apply``. See :func:`needs_write_payload`.
    """
    setting = setting_for(entry)
    kwargs: dict[str, Any] = dict(setting.make_filter())  # {"compression": id, "compression_opts": (...)}
    dtype = entry.get("input_dtype") or entry.get("detector_dtype")
    if dtype is not None:
        kwargs["dtype"] = str(dtype)
    if shape is not None:
        kwargs["chunks"] = setting.chunk_shape(shape)
    elif isinstance(setting.chunks, tuple):
        kwargs["chunks"] = setting.chunks
    return kwargs


def codec_config(entry: Mapping[str, Any]) -> dict[str, Any]:
    """What an acquisition system needs to write with a thresholds entry, as plain YAML-able data.

    Parameters
    ----------
    entry : mapping
        A combined or per-dataset thresholds entry.

    Returns
    -------
    dict
        ``codec``, ``mode``, ``bound``, ``bound_range`` and ``confirmed`` (how sure the bound
        is), ``bound_kind`` ('absolute' counts, 'poisson_sigma' or None); ``hdf5plugin`` (``class`` and ``kwargs``: ``getattr(hdf5plugin, class)(**kwargs)``);
        ``filter_id`` and ``cd_values`` (what to pass to ``H5Pset_filter`` in any language);
        ``cd_values_stored`` (as the study's file recorded them after the filter's
        ``set_local``, which adds the data's type and shape); ``chunks`` (the chunk setting:
        None = one frame per chunk, 'all' = one chunk, or a chunk shape); ``chunks_measured``
        (the chunk shape on the study's data); ``input_dtype`` (the stored dtype) and
        ``detector_dtype``; ``transform`` and ``transform_params`` (the pre-transform, None and
        {} without one) and ``masked_pixels`` (how masked pixels are stored).

    Raises
    ------
    ConfigError
        As :func:`create_dataset_kwargs`.
    """
    setting = setting_for(entry)
    filt = setting.make_filter()
    plugin = entry.get("hdf5plugin") or {}
    chunks = setting.chunks
    return {
        "codec": setting.codec,
        "mode": setting.mode,
        "bound": entry.get("bound"),
        # how sure: where the limiting criterion crosses its tolerance +-1 standard error, and
        # whether less lossy values were verified
        "bound_range": entry.get("bound_range"),
        "confirmed": entry.get("confirmed"),
        "bound_kind": setting.bound_kind,
        "hdf5plugin": {"class": plugin.get("class") or setting.spec.plugin_class,
                       "kwargs": plain(plugin.get("kwargs") if plugin.get("kwargs") is not None
                                        else setting.plugin_kwargs())},
        "filter_id": int(filt.filter_id),
        "cd_values": [int(v) for v in filt.filter_options],
        "cd_values_stored": [int(v) for v in entry.get("cd_values") or []],
        "chunks": list(chunks) if isinstance(chunks, tuple) else chunks,
        "chunks_measured": plain(entry.get("chunks")),
        "input_dtype": entry.get("input_dtype"),
        "detector_dtype": entry.get("detector_dtype"),
        "transform": setting.spec.transform,
        "transform_params": plain(setting.transform_params()),
        "masked_pixels": "filled before compression; originals stored losslessly beside the payload "
                         "('<name>_mask', '<name>_masked_values') by lossbound.codecs.write_payload",
    }

