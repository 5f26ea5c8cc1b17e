"""SZ (hdf5plugin ``SZ``): error-bounded prediction; its pointwise_relative mode is refused on integers."""
from lossbound.codecs.specs import CodecSpec, register

register(
    CodecSpec(
        name="sz",
        plugin_class="SZ",
        modes={"absolute": "absolute", "relative": "relative", "pointwise_relative": "pointwise_relative"},
        int_unsafe_modes=frozenset({"pointwise_relative"}),
        bounded_modes=frozenset({"absolute"}),
        notes="pointwise_relative calls exit(0) on integer data, killing the process",
    )
)
