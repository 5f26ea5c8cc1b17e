"""Bitshuffle + LZ4 (lossless baseline)."""
from lossbound.codecs.specs import CodecSpec, register

register(
    CodecSpec(
        name="bitshuffle_lz4",
        plugin_class="Bitshuffle",
        lossy=False,
        fixed_kwargs={"cname": "lz4"},
    )
)
