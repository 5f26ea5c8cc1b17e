"""SZ3 (hdf5plugin ``SZ3``): error-bounded prediction; works on integers directly."""
from lossbound.codecs.specs import CodecSpec, register

register(
    CodecSpec(
        name="sz3",
        plugin_class="SZ3",
        modes={
            "absolute": "absolute",
            "relative": "relative",
            "norm2": "norm2",
            "psnr": "peak_signal_to_noise_ratio",
        },
        bounded_modes=frozenset({"absolute"}),
        less_loss_modes=frozenset({"psnr"}),
        notes="works on integer data directly; a bound < 1 on ints is lossless",
    )
)
