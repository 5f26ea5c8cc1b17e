"""ZFP (hdf5plugin ``Zfp``): fixed-accuracy transform coding of float data."""
from lossbound.codecs.specs import CodecSpec, register

register(
    CodecSpec(
        name="zfp",
        plugin_class="Zfp",
        modes={"absolute": "accuracy", "precision": "precision", "rate": "rate"},
        float_only=True,
        bounded_modes=frozenset({"absolute"}),
        integer_modes=frozenset({"precision"}),
        less_loss_modes=frozenset({"precision", "rate"}),
        notes="rejects uint16; on int32/uint32 the absolute bound is not honoured",
    )
)
