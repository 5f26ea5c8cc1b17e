"""SPERR (hdf5plugin ``Sperr``): wavelet coding of float data."""
from lossbound.codecs.specs import CodecSpec, register

register(
    CodecSpec(
        name="sperr",
        plugin_class="Sperr",
        modes={"absolute": "absolute", "rate": "rate", "psnr": "peak_signal_to_noise_ratio"},
        float_only=True,
        bounded_modes=frozenset({"absolute"}),
        less_loss_modes=frozenset({"rate", "psnr"}),
        notes="segfaults or returns garbage on integer data",
    )
)
