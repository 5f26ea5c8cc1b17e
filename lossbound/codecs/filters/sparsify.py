"""The Bragg-preserving reduction in front of Blosc2 (``sparsify_*``)."""
import hdf5plugin

from lossbound.codecs.specs import CodecSpec, register

MODEL_EVERY = 32  # frames per sigma-clipped background model (2 ms of frames at 16 kHz, 32 ms at 1 kHz)

# Bragg-preserving reduction (lossbound.codecs.transforms.bragg_sparsify) + Blosc2: pixels whose
# 3x3 box stands k_sigma above the azimuthal background, grown by a margin, kept exactly;
# the rest becomes the background model (rounded, or re-drawn with Poisson noise). The model's
# sigma clipping runs once per MODEL_EVERY frames, each frame refreshing its level per shell
# (lossbound.codecs.sparsify): what lets it run at acquisition speed. The value
# searched is k_sigma (larger = fewer pixels kept = more loss); the margin is one codec per
# value, so a multirun over them searches it too.
for _name, _margin, _noise in (("sparsify_m1", 1, False), ("sparsify_m2", 2, False), ("sparsify_m3", 3, False),
                               ("sparsify_m2_noise", 2, True)):
    register(
        CodecSpec(
            name=_name,
            plugin_class="Blosc2",
            modes={"k_sigma": "k_sigma"},
            transform="bragg_sparsify",
            # the background model's parameters are the sx pipeline's defaults, recorded in
            # every thresholds entry (transform_params)
            transform_kwargs={"margin": _margin, "noise": _noise, "npt": 500, "clip_sigma": 3.0, "clip_iterations": 5,
                              "model_every": MODEL_EVERY},
            needs_geometry=True,
            integer_only=True,
            fixed_kwargs={"cname": "zstd", "clevel": 5, "filters": hdf5plugin.Blosc2.BITSHUFFLE},
            notes=f"Bragg spots + {_margin} px kept exactly, background replaced by its azimuthal model"
                  + (" with Poisson noise re-drawn" if _noise else "") + "; Blosc2",
        )
    )
