"""Zstandard (lossless baseline)."""
from lossbound.codecs.specs import CodecSpec, register

register(
    CodecSpec(
        name="zstd",
        plugin_class="Zstd",
        modes={"clevel": "clevel"},
        lossy=False,
        integer_modes=frozenset({"clevel"}),
    )
)
