"""Blosc2: bit-shuffle + Zstd (lossless baseline)."""
import hdf5plugin

from lossbound.codecs.specs import CodecSpec, register

register(
    CodecSpec(
        name="blosc2",
        plugin_class="Blosc2",
        modes={"clevel": "clevel"},
        lossy=False,
        integer_modes=frozenset({"clevel"}),
        fixed_kwargs={"cname": "zstd", "clevel": 5, "filters": hdf5plugin.Blosc2.BITSHUFFLE},
        notes="bit-shuffle + Zstd: beat Bitshuffle-LZ4 on every shared detector frame",
    )
)
