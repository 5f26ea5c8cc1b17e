"""Metric functions and registered evaluators (image quality, FRC, segmentation, distortion)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from lossbound.evaluators import EVALUATORS
from lossbound.evaluators.base import Outcome
from lossbound.evaluators.distortion import error_in_sigma, max_abs_error, poisson_sigma
from lossbound.evaluators.frc import frc_curve, frc_resolution, frc_threshold
from lossbound.evaluators.image import circle_mask, nrmse, psnr, ssim
from lossbound.evaluators.segmentation import dice, phase_fractions, phase_labels
from lossbound.core.errors import ConfigError
from lossbound.pipelines.base import Dataset

# --------------------------------------------------------------------------- fixtures


def _blurred(rng: np.random.Generator, shape: tuple[int, ...], blur: float = 2.0) -> np.ndarray:
    """Band-limited random texture, unit variance, blurred within each 2-D slice."""
    sigma = (0,) * (len(shape) - 2) + (blur, blur)
    x = gaussian_filter(rng.standard_normal(shape), sigma)
    return x / x.std()


def _phantom(n: int = 48, n_slices: int = 3) -> np.ndarray:
    """Three-phase stack (levels 0, 1, 2) with round inclusions, slightly blurred."""
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    vol = np.zeros((n_slices, n, n))
    for s in range(n_slices):
        vol[s][(x - 6 - s) ** 2 + y**2 < 14**2] = 1.0
        vol[s][(x + 10) ** 2 + (y - 8 + s) ** 2 < 7**2] = 2.0
        vol[s][x**2 + (y + 12) ** 2 < 5**2] = 2.0
    return gaussian_filter(vol, (0, 0.7, 0.7)).astype(np.float32)


def _outcome(
    recon: np.ndarray,
    *,
    half_noise: float = 0.05,
    recon_noise: float = 0.0,
    seed: int = 0,
    projections: np.ndarray | None = None,
    darks: np.ndarray | None = None,
    meta: dict | None = None,
) -> Outcome:
    rng = np.random.default_rng(seed)
    if projections is None:
        projections = rng.poisson(200, (6, 8, 10)).astype(np.uint16)
    arrays = {"projections": projections}
    if darks is not None:
        arrays["darks"] = darks
    data = Dataset(
        name="fake", arrays=arrays, payload="projections", source="test", meta=meta or {}
    )

    def noisy(s: float) -> np.ndarray:
        return (recon + s * rng.standard_normal(recon.shape)).astype(np.float32)

    result = {
        "recon": noisy(recon_noise) if recon_noise else recon,
        "recon_even": noisy(half_noise),
        "recon_odd": noisy(half_noise),
    }
    return Outcome(data=data, result=result)


def _make(name: str, **params):
    return EVALUATORS.get(name)(**params)


# --------------------------------------------------------------------------- image metrics


def test_identical_images_score_perfectly():
    img = _phantom()
    assert psnr(img, img, data_range=2.0) == math.inf
    assert ssim(img, img, data_range=2.0) == pytest.approx(1.0, abs=1e-12)
    assert ssim(img[0], img[0], data_range=2.0) == pytest.approx(1.0, abs=1e-12)
    assert nrmse(img, img) == 0.0


@pytest.mark.parametrize("sigma", [0.01, 0.05])
def test_psnr_of_gaussian_noise_matches_theory(sigma):
    rng = np.random.default_rng(1)
    ref = rng.uniform(0, 1, (4, 128, 128))
    test = ref + rng.normal(0, sigma, ref.shape)
    expected = 20 * np.log10(1.0 / sigma)
    assert psnr(ref, test, data_range=1.0) == pytest.approx(expected, abs=0.2)


def test_psnr_matches_skimage_and_handles_unsigned_data():
    from skimage.metrics import peak_signal_noise_ratio

    rng = np.random.default_rng(2)
    ref = rng.integers(0, 4000, (5, 20, 30)).astype(np.uint16)
    test = ref.astype(np.int32) + rng.integers(-3, 4, ref.shape)
    test = np.clip(test, 0, None).astype(np.uint16)  # test < ref somewhere: no wrap-around
    ours = psnr(ref, test, data_range=4000)
    theirs = peak_signal_noise_ratio(ref.astype(float), test.astype(float), data_range=4000)
    assert ours == pytest.approx(theirs, rel=1e-12)


def test_nrmse_matches_skimage():
    from skimage.metrics import normalized_root_mse

    rng = np.random.default_rng(3)
    ref = rng.uniform(1, 2, (30, 40))
    test = ref + rng.normal(0, 0.1, ref.shape)
    for norm in ("euclidean", "min-max", "mean"):
        assert nrmse(ref, test, normalization=norm) == pytest.approx(
            normalized_root_mse(ref, test, normalization=norm), rel=1e-12
        )


def test_ssim_of_stack_is_mean_over_slices():
    rng = np.random.default_rng(4)
    ref = _blurred(rng, (3, 32, 32))
    test = ref + rng.normal(0, 0.3, ref.shape)
    per_slice = [ssim(ref[i], test[i], data_range=8.0) for i in range(3)]
    assert ssim(ref, test, data_range=8.0) == pytest.approx(np.mean(per_slice))
    assert ssim(ref, test, data_range=8.0) < 0.99
    # stack_axis selects how the stack is sliced
    assert ssim(np.moveaxis(ref, 0, 2), np.moveaxis(test, 0, 2), data_range=8.0, stack_axis=2) == (
        pytest.approx(np.mean(per_slice))
    )


def test_masked_metrics_ignore_pixels_outside_the_circle():
    img = _phantom(n=40, n_slices=2)
    test = img.copy()
    outside = ~circle_mask(img.shape)
    test[:, outside] += 5.0
    mask = circle_mask(img.shape)
    assert psnr(img, test, data_range=2.0, mask=mask) == math.inf
    assert nrmse(img, test, mask=mask) == 0.0
    assert psnr(img, test, data_range=2.0) < 30


@pytest.mark.parametrize(
    "call",
    [
        lambda a, b: psnr(a, b, data_range=1.0),
        lambda a, b: nrmse(a, b),
        lambda a, b: ssim(a, b, data_range=1.0),
        lambda a, b: frc_curve(a, b),
        lambda a, b: dice(a, b, label=0),
        lambda a, b: max_abs_error(a, b),
        lambda a, b: error_in_sigma(a, b, 1.0),
    ],
)
def test_shape_mismatch_raises_clear_value_error(call):
    message = r"shapes differ: reference \(16, 16\) vs test \(16, 17\)"
    with pytest.raises(ValueError, match=message):
        call(np.zeros((16, 16)), np.zeros((16, 17)))


def test_invalid_data_range_raises():
    with pytest.raises(ValueError, match="data_range"):
        psnr(np.zeros(4), np.ones(4), data_range=0)


# --------------------------------------------------------------------------- FRC


def test_frc_of_image_with_itself_is_one():
    rng = np.random.default_rng(5)
    img = _blurred(rng, (40, 48), blur=1.0)
    freq, frc, n = frc_curve(img, img)
    assert freq[0] == 0 and freq[-1] == pytest.approx(0.5)
    assert np.allclose(frc, 1.0)
    assert np.all(n[1:] > 0)
    res = frc_resolution(freq, frc)
    assert (res.frequency, res.resolution_px, res.crossed) == (0.5, 2.0, False)

    stack = _blurred(rng, (3, 32, 32))
    _, frc3, n3 = frc_curve(stack, stack, apodize=False)
    assert np.allclose(frc3, 1.0)
    _, _, n1 = frc_curve(stack[0], stack[0])
    assert np.array_equal(n3, 3 * n1)  # pixel counts are summed over slices


def test_frc_ring_counts_cover_the_nyquist_disc():
    freq, _, n = frc_curve(np.ones((64, 64)), np.ones((64, 64)))
    assert len(freq) == 33
    # total pixels within the rings ~ area of the disc of radius N/2 (+ half ring)
    assert n.sum() == pytest.approx(np.pi * 32.5**2, rel=0.02)


def test_frc_resolution_coarsens_with_noise():
    rng = np.random.default_rng(6)
    obj = _blurred(rng, (4, 96, 96))
    px = []
    for noise in (0.2, 1.0, 4.0):
        a = obj + noise * rng.standard_normal(obj.shape)
        b = obj + noise * rng.standard_normal(obj.shape)
        freq, frc, n = frc_curve(a, b)
        res = frc_resolution(freq, frc)
        assert res.crossed
        px.append(res.resolution_px)
    assert px[0] < px[1] < px[2]
    assert px[2] > 1.2 * px[0]


def test_frc_resolution_interpolates_the_first_crossing():
    freq = np.linspace(0, 0.5, 11)
    frc = 1 - 2 * freq  # crosses 0.5 at exactly 0.25 cycles/pixel (between two rings)
    frc[-1] = 0.9  # a later rise must not matter: first crossing wins
    res = frc_resolution(freq, frc, threshold=0.5)
    assert res.crossed
    assert res.frequency == pytest.approx(0.25)
    assert res.resolution_px == pytest.approx(4.0)
    # the zero-frequency ring is ignored even if it is below the threshold
    frc[0] = -1
    assert frc_resolution(freq, frc, threshold=0.5).frequency == pytest.approx(0.25)


def test_half_bit_threshold_tends_to_0_172():
    thr = frc_threshold("half-bit", np.array([1, 100, 1e8]))
    assert thr[0] == pytest.approx(1.0, abs=1e-3)  # one pixel: no information
    assert thr[0] > thr[1] > thr[2]
    assert thr[2] == pytest.approx(0.2071 / 1.2071, abs=1e-3)
    with pytest.raises(ValueError, match="n_pixels"):
        frc_resolution(np.arange(3.0), np.ones(3), threshold="half-bit")


# --------------------------------------------------------------------------- segmentation


def test_phase_labels_dice_and_fractions():
    img = np.array([[0.1, 0.6, 1.4], [2.0, 0.5, 1.5]])
    labels = phase_labels(img, [0.5, 1.5])
    assert labels.dtype == np.uint8
    assert labels.tolist() == [[0, 1, 1], [2, 1, 2]]
    assert phase_fractions(labels, n_phases=3).tolist() == pytest.approx([1 / 6, 3 / 6, 2 / 6])
    other = labels.copy()
    other[0, 1] = 0
    assert dice(labels, labels, label=1) == 1.0
    assert dice(labels, other, label=1) == pytest.approx(2 * 2 / (3 + 2))
    assert dice(labels, other, label=7) == 1.0  # absent from both: perfect agreement
    with pytest.raises(ValueError, match="increasing"):
        phase_labels(img, [1.5, 0.5])
    with pytest.raises(ValueError, match="0..1"):
        phase_fractions(labels, n_phases=2)


# --------------------------------------------------------------------------- distortion


def test_error_in_sigma_is_one_for_one_sigma_errors():
    rng = np.random.default_rng(7)
    dark = 100.0
    counts = (rng.poisson(50, (4, 16, 16)) + dark).astype(np.uint16)
    sigma = poisson_sigma(counts, offset=dark, adu_per_photon=1.0)
    assert np.allclose(sigma, np.sqrt(np.maximum(counts - dark, 1.0)))
    z = error_in_sigma(counts, counts + sigma, sigma)
    assert np.allclose(z, 1.0)


def test_poisson_sigma_gain_read_noise_and_floor():
    counts = np.array([0.0, 10.0, 100.0])
    s = poisson_sigma(counts, offset=10.0, adu_per_photon=4.0, read_noise=3.0)
    assert s.tolist() == pytest.approx([4.0, 4.0, np.sqrt(4 * 90 + 9)])  # floor = gain
    s = poisson_sigma(counts, adu_per_photon=4.0, floor=0.5)
    assert s.tolist() == pytest.approx([0.5, np.sqrt(40), 20.0])
    with pytest.raises(ValueError, match="adu_per_photon"):
        poisson_sigma(counts, adu_per_photon=0)


def test_max_abs_error_does_not_wrap_unsigned():
    a = np.array([[0, 5]], dtype=np.uint16)
    b = np.array([[3, 5]], dtype=np.uint16)
    assert max_abs_error(a, b) == max_abs_error(b, a) == 3.0


# --------------------------------------------------------------------------- evaluators


def test_evaluators_are_registered():
    for name in ("image_quality", "frc", "segmentation", "distortion"):
        assert EVALUATORS.get(name).name == name


def test_evaluators_give_perfect_scores_for_identical_outcomes():
    rng = np.random.default_rng(8)
    darks = rng.poisson(5, (3, 8, 10)).astype(np.uint16)
    raw = _outcome(_phantom(), darks=darks, seed=1)
    expected = {
        "image_quality": {"recon_psnr": math.inf, "recon_ssim": 1.0, "recon_nrmse": 0.0},
        "frc": {"frc_resolution_change": 0.0, "frc_raw_vs_compressed_freq": 0.5},
        "segmentation": {
            "seg_dice_min": 1.0,
            "seg_dice_mean": 1.0,
            "seg_phase_fraction_change_max": 0.0,
            "seg_dice_phase0": 1.0,
            "seg_dice_phase1": 1.0,
            "seg_dice_phase2": 1.0,
        },
        "distortion": {
            "proj_max_abs_error": 0.0,
            "proj_psnr": math.inf,
            "proj_rms_error_sigma": 0.0,
            "proj_max_error_sigma": 0.0,
            "proj_bias_sigma": 0.0,
        },
    }
    for name, want in expected.items():
        masked = name in ("image_quality", "segmentation")
        for params in ({}, {"mask": "circle"} if masked else {}):
            ev = _make(name, **params)
            got = ev.compare(raw, raw, ev.reference(raw))
            assert all(isinstance(v, float) for v in got.values()), (name, got)
            for key, value in want.items():
                assert got[key] == pytest.approx(value, abs=1e-12), (name, key, got)


def test_image_quality_evaluator_on_noisy_recon():
    recon = _phantom()
    raw = _outcome(recon)
    comp = _outcome(recon, recon_noise=0.02, seed=2)
    ev = _make("image_quality", key="recon", mask="circle")
    ref = ev.reference(raw)
    assert ref["data_range"] == pytest.approx(float(np.ptp(recon[..., circle_mask(recon.shape)])))
    out = ev.compare(raw, comp, ref)
    assert set(out) == {"recon_psnr", "recon_ssim", "recon_nrmse"}
    assert out["recon_psnr"] == pytest.approx(20 * np.log10(ref["data_range"] / 0.02), abs=0.3)
    assert 0.5 < out["recon_ssim"] < 1.0
    assert out["recon_nrmse"] > 0


def test_frc_evaluator_reports_worse_resolution_for_noisier_halves():
    rng = np.random.default_rng(9)
    recon = _blurred(rng, (4, 64, 64)).astype(np.float32)
    raw = _outcome(recon, half_noise=0.3, seed=3)
    comp = _outcome(recon, half_noise=2.0, recon_noise=0.5, seed=4)
    ev = _make("frc", half_keys=["recon_even", "recon_odd"], threshold=0.143)
    ref = ev.reference(raw)
    out = ev.compare(raw, comp, ref)
    assert set(out) == {
        "frc_resolution_raw_px",
        "frc_resolution_px",
        "frc_resolution_change",
        "frc_raw_vs_compressed_freq",
    }
    assert out["frc_resolution_raw_px"] == ref["resolution_px"]
    assert out["frc_resolution_px"] > out["frc_resolution_raw_px"]
    assert out["frc_resolution_change"] == pytest.approx(
        out["frc_resolution_px"] / out["frc_resolution_raw_px"] - 1
    )
    assert out["frc_resolution_change"] > 0.1
    assert 0 < out["frc_raw_vs_compressed_freq"] < 0.5
    # the half-bit criterion is accepted too
    assert _make("frc", threshold="half-bit").reference(raw)["resolution_px"] > 2


def test_segmentation_evaluator_thresholds_once_on_raw():
    recon = _phantom()
    raw = _outcome(recon)
    ev = _make("segmentation", n_phases=3)
    ref = ev.reference(raw)
    t = ref["thresholds"]
    assert len(t) == 2 and 0.1 < t[0] < 0.9 and 1.1 < t[1] < 1.9
    assert sum(ref["fractions_raw"]) == pytest.approx(1.0)
    # shifting the compressed result by +0.3 moves voxels across the fixed thresholds
    comp = Outcome(data=raw.data, result={**raw.result, "recon": recon + np.float32(0.3)})
    out = ev.compare(raw, comp, ref)
    assert out["seg_dice_min"] < 1.0
    assert out["seg_dice_min"] == min(out[f"seg_dice_phase{i}"] for i in range(3))
    assert out["seg_phase_fraction_change_max"] > 0
    # explicit thresholds skip Otsu
    ev2 = _make("segmentation", thresholds=[0.5, 1.5])
    assert ev2.reference(raw)["thresholds"] == [0.5, 1.5]
    assert "seg_dice_phase2" in ev2.compare(raw, raw, ev2.reference(raw))


def test_distortion_evaluator_bias_and_sigma_units():
    rng = np.random.default_rng(10)
    gain, dark_level = 2.0, 100
    darks = np.full((4, 8, 10), dark_level, dtype=np.uint16)
    signal = rng.poisson(400, (6, 8, 10)) * gain
    proj = (signal + dark_level).astype(np.uint16)
    raw = _outcome(_phantom(), projections=proj, darks=darks, meta={"adu_per_photon": gain})
    shift = 3
    comp = Outcome(
        data=raw.data.with_payload((proj + shift).astype(np.uint16)), result=raw.result
    )
    ev = _make("distortion")
    ref = ev.reference(raw)
    assert ref["adu_per_photon"] == gain
    assert ref["data_range"] == float(np.ptp(proj))
    out = ev.compare(raw, comp, ref)
    sigma = np.sqrt(gain * signal)  # darks are exactly the offset
    assert out["proj_max_abs_error"] == shift
    assert out["proj_psnr"] == pytest.approx(20 * np.log10(ref["data_range"] / shift))
    assert out["proj_rms_error_sigma"] == pytest.approx(np.sqrt(np.mean((shift / sigma) ** 2)))
    assert out["proj_max_error_sigma"] == pytest.approx(np.max(shift / sigma))
    assert out["proj_bias_sigma"] == pytest.approx(shift / sigma.mean())
    # a negative shift is just as bad: the bias is reported as a magnitude
    comp_neg = Outcome(data=raw.data.with_payload(proj - shift), result=raw.result)
    neg = ev.compare(raw, comp_neg, ref)
    assert neg["proj_bias_sigma"] == pytest.approx(out["proj_bias_sigma"])
    # explicit gain overrides the metadata; no darks -> zero offset
    ev_nodark = _make("distortion", dark_key="missing", adu_per_photon=1.0)
    out2 = ev_nodark.compare(raw, comp, ev_nodark.reference(raw))
    assert out2["proj_bias_sigma"] == pytest.approx(shift / np.sqrt(proj.astype(float)).mean())


def test_distortion_chunks_large_payloads(monkeypatch):
    import lossbound.evaluators.image as image

    monkeypatch.setattr(image, "_SLAB_ELEMENTS", 50)  # one 80-pixel frame per slab
    assert len(list(image.slab_bounds((7, 8, 10)))) == 7
    rng = np.random.default_rng(11)
    proj = rng.poisson(100, (7, 8, 10)).astype(np.uint16)
    test = (proj + rng.integers(-2, 3, proj.shape)).astype(np.uint16)
    raw = _outcome(_phantom(), projections=proj)
    comp = Outcome(data=raw.data.with_payload(test), result=raw.result)
    ev = _make("distortion")
    out = ev.compare(raw, comp, ev.reference(raw))
    err = test.astype(float) - proj
    assert out["proj_max_abs_error"] == np.abs(err).max()
    z = err / np.maximum(np.sqrt(proj.astype(float)), 1.0)
    assert out["proj_rms_error_sigma"] == pytest.approx(np.sqrt(np.mean(z**2)))


def test_evaluator_configuration_errors():
    with pytest.raises(ConfigError, match="unknown parameter"):
        _make("image_quality", keyy="recon")
    with pytest.raises(ConfigError, match="mask"):
        _make("segmentation", mask=3)
    with pytest.raises(ConfigError, match="threshold"):
        _make("frc", threshold="quarter-bit")
    raw = _outcome(_phantom())
    with pytest.raises(ConfigError, match="mask 'square' is neither 'circle' nor an array"):
        _make("segmentation", mask="square").reference(raw)
    ev = _make("image_quality", key="volume")
    with pytest.raises(ConfigError, match="no key 'volume'.*recon"):
        ev.reference(raw)
    comp = Outcome(data=raw.data, result={**raw.result, "recon": raw.result["recon"][:, :-1]})
    ev = _make("image_quality")
    with pytest.raises(ValueError, match="result 'recon' shapes differ"):
        ev.compare(raw, comp, ev.reference(raw))


def test_slabbed_image_metrics_equal_unslabbed(monkeypatch):
    import lossbound.evaluators.image as image

    rng = np.random.default_rng(12)
    ref = rng.uniform(0, 1, (5, 12, 12)).astype(np.float32)
    test = ref + rng.normal(0, 0.05, ref.shape).astype(np.float32)
    mask = circle_mask(ref.shape)
    whole = [psnr(ref, test, data_range=1.0, mask=mask), nrmse(ref, test, mask=mask)]
    monkeypatch.setattr(image, "_SLAB_ELEMENTS", 200)  # one 144-pixel slice per slab
    sliced = [psnr(ref, test, data_range=1.0, mask=mask), nrmse(ref, test, mask=mask)]
    assert sliced == pytest.approx(whole, rel=1e-12)


def test_masks_come_from_the_data_and_prefixes_rename_metrics():
    """A boolean array the result carries works as a mask; it equals the circle it holds."""
    from lossbound.core.masks import circle_mask

    raw = _outcome(_phantom())
    recon = raw.result["recon"]
    rng = np.random.default_rng(3)
    noisy = recon + rng.normal(0, 0.01, recon.shape).astype(recon.dtype)
    raw = Outcome(raw.data, {**raw.result, "valid": circle_mask(recon.shape)})
    comp = Outcome(raw.data, {**raw.result, "recon": noisy})
    by_circle = _make("image_quality", mask="circle")
    by_data = _make("image_quality", mask="valid", prefix="slice")
    a = by_circle.compare(raw, comp, by_circle.reference(raw))
    b = by_data.compare(raw, comp, by_data.reference(raw))
    assert set(b) == {"slice_psnr", "slice_ssim", "slice_nrmse"}
    assert b["slice_psnr"] == pytest.approx(a["recon_psnr"]) and b["slice_nrmse"] == pytest.approx(a["recon_nrmse"])
    with pytest.raises(ConfigError, match="dtype"):
        bad = Outcome(raw.data, {**raw.result, "valid": recon})
        _make("image_quality", mask="valid").reference(bad)
