"""The noise-aware quantiser in front of a standard lossless filter (``quant_*``)."""
import hdf5plugin

from lossbound.codecs.specs import CodecSpec, register

# The noise-aware quantiser (lossbound.codecs.quantiser) followed by a standard lossless filter:
# value = step as a fraction f of each count's Poisson sigma; error <= f/2 sigma, counts below
# 4/f**2 exact, dtype kept, so the file needs nothing but the lossless filter to be read.
for _name, _cls, _kwargs in (
    ("quant_bslz4", "Bitshuffle", {"cname": "lz4"}),
    ("quant_zstd", "Zstd", {}),
    ("quant_blosc2", "Blosc2", {"cname": "zstd", "clevel": 5, "filters": hdf5plugin.Blosc2.BITSHUFFLE}),
):
    register(
        CodecSpec(
            name=_name,
            plugin_class=_cls,
            modes={"step_sigma": "step_sigma"},
            sigma_modes=frozenset({"step_sigma"}),
            sigma_error_per_value=0.5,
            transform="noise_quantiser",
            integer_only=True,
            fixed_kwargs=_kwargs,
            notes="noise quantiser (power-of-two steps <= f sigma, centred) + lossless filter",
        )
    )
