"""Simulated parallel-beam tomography scan of a multi-material sample, with ground truth.

The sample is a slightly tapered, elliptic polymer cylinder (the matrix) standing on the
rotation axis, holding glass spheres, mineral ellipsoids, slanted glass fibres, a slanted metal
wire, metal grains, air pores (spheres and elongated ellipsoids), an air crack, fine rods of
1-3 px diameter and a bar-pattern resolution target.  Projections are computed from *analytic*
line integrals of every object's cross-section in each detector row (ellipses and rectangles,
sub-sampled across each detector pixel), so there is no numerical radon and no interpolation
error in the ground truth; the detector then adds a smooth beam profile, a fixed gain pattern,
per-frame flux jitter, Poisson photon noise, dark offsets and Gaussian read noise, and stores
rounded ``uint16`` counts as a real camera does.

Geometry conventions (shared with :mod:`lossbound.pipelines.tomo.recon`):

* the rotation axis is parallel to the detector rows' index (axis 1 of the projections), so each
  detector row is one sinogram and one reconstructed slice;
* in a slice, pixel ``(i, j)`` is the point ``x = j - (N - 1)/2``, ``y = i - (N - 1)/2`` (pixel
  units, origin on the rotation axis) and the ray hitting detector position ``s`` at angle
  ``theta`` is ``x cos(theta) - y sin(theta) = s``;
* detector column ``k`` sits at ``s = k - center`` with ``center = (N - 1)/2 + center_offset``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from lossbound.core.files import atomic_path

log = logging.getLogger(__name__)

SIMULATION_VERSION = 2  # 2: detector defects (dead and hot pixel, zingers)
"""Bumped whenever the phantom or detector model changes, so cached files are regenerated."""

REFERENCE_COLS = 256
"""Detector width for which the layout and the attenuation values below are specified.

Other widths scale the sample (same field of view, finer or coarser pixels), and attenuation per
pixel scales inversely, so transmission does not depend on ``n_cols``."""


@dataclasses.dataclass(frozen=True)
class Material:
    """One phase of the sample: label id, name and attenuation in 1/pixel at REFERENCE_COLS."""

    id: int
    name: str
    mu: float


MATERIALS: dict[int, Material] = {
    m.id: m
    for m in (
        Material(0, "air", 0.0),  # outside the sample
        Material(1, "polymer", 0.005),  # matrix
        Material(2, "glass", 0.018),
        Material(3, "mineral", 0.030),
        Material(4, "metal", 0.060),
        Material(5, "pore", 0.0),  # air inside the sample
    )
}
_AIR, _POLYMER, _GLASS, _MINERAL, _METAL, _PORE = range(6)

_DEFAULTS: dict[str, Any] = dict(
    n_angles=360,
    n_rows=64,
    n_cols=256,
    flat_counts=20000.0,
    dark_counts=100.0,
    read_noise=2.5,
    n_flats=20,
    n_darks=20,
    seed=0,
    layout_seed=0,
    center_offset=1.7,
    flux_jitter=1e-3,
    n_subpixels=4,
    dead_pixels=1,
    hot_pixels=1,
    zingers=6,
)


def simulation_params(**overrides: Any) -> dict[str, Any]:
    """The complete, normalised parameter set of :func:`simulate_tomo` (defaults + overrides).

    It is what :func:`write_dataexchange` stores as ``/simulation`` attributes, so comparing it
    with :func:`read_simulation_attrs` tells whether a cached file matches a request.

    Raises
    ------
    TypeError
        For an unknown parameter name.
    """
    unknown = sorted(set(overrides) - set(_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown simulate_tomo parameter(s) {unknown}; expected {sorted(_DEFAULTS)}")
    params = {**_DEFAULTS, **overrides}
    # Normalise types so that e.g. n_cols=256.0 from YAML and 256 compare equal.
    for key, default in _DEFAULTS.items():
        params[key] = type(default)(params[key])
    params["version"] = SIMULATION_VERSION
    return params


# --------------------------------------------------------------------------------------------
# Phantom description: 2-D cross-sections and the 3-D objects that produce them per slice
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Shape:
    """A filled ellipse or rectangle in one slice (pixel units), adding ``dmu`` to its host."""

    kind: str  # "ellipse" (semi-axes a, b) or "rect" (half-widths a, b)
    cx: float
    cy: float
    a: float
    b: float
    phi: float  # rotation of the a axis from +x towards +y (radians)
    dmu: float
    label: int

    @property
    def radius(self) -> float:
        """Radius of a circle containing the shape."""
        return max(self.a, self.b) if self.kind == "ellipse" else math.hypot(self.a, self.b)


@dataclasses.dataclass(frozen=True)
class _Object:
    """A 3-D object with an axis-aligned (z = detector row) description.

    kinds: ``prism`` (z-invariant cross-section), ``ellipsoid`` (principal axis c along z; spheres
    too), ``fibre`` (cylinder of radius a tilted by ``tilt`` towards azimuth ``phi``), ``taper``
    (elliptic cylinder whose semi-axes grow by ``slope`` per row: the matrix).
    """

    kind: str
    cx: float
    cy: float
    a: float
    b: float
    phi: float
    dmu: float
    label: int
    cz: float = 0.0
    c: float = math.inf
    tilt: float = 0.0
    slope: float = 0.0
    shape_kind: str = "ellipse"

    @property
    def static(self) -> bool:
        return self.kind == "prism"

    def section(self, z: float) -> _Shape | None:
        """The cross-section at height ``z`` (pixels from the detector's middle row), or None."""
        if self.kind == "prism":
            return _Shape(self.shape_kind, self.cx, self.cy, self.a, self.b, self.phi, self.dmu, self.label)
        if self.kind == "ellipsoid":
            t = (z - self.cz) / self.c
            if abs(t) >= 1.0:
                return None
            k = math.sqrt(1.0 - t * t)
            return _Shape("ellipse", self.cx, self.cy, self.a * k, self.b * k, self.phi, self.dmu, self.label)
        if self.kind == "fibre":
            shift = (z - self.cz) * math.tan(self.tilt)
            return _Shape(
                "ellipse",
                self.cx + shift * math.cos(self.phi),
                self.cy + shift * math.sin(self.phi),
                self.a / math.cos(self.tilt),  # oblique cut of a round fibre
                self.a,
                self.phi,
                self.dmu,
                self.label,
            )
        if self.kind == "taper":
            g = self.slope * z
            return _Shape("ellipse", self.cx, self.cy, self.a + g, self.b + g, self.phi, self.dmu, self.label)
        raise ValueError(f"unknown object kind {self.kind!r}")


class _Placer:
    """Rejection sampling of non-overlapping objects (bounding cylinders) inside the matrix."""

    def __init__(self, rng: np.random.Generator, centre: tuple[float, float], radius: float, margin: float):
        self.rng = rng
        self.centre = centre
        self.radius = radius  # usable radius inside the matrix
        self.margin = margin
        self.taken: list[tuple[float, float, float, float, float]] = []  # x, y, r, z0, z1

    def reserve(self, x: float, y: float, r: float, z0: float = -math.inf, z1: float = math.inf) -> None:
        self.taken.append((x, y, r, z0, z1))

    def place(self, r: float, z0: float = -math.inf, z1: float = math.inf) -> tuple[float, float] | None:
        """A random free centre for a bounding circle of radius ``r`` over heights [z0, z1]."""
        for _ in range(500):
            rho = (self.radius - r) * math.sqrt(self.rng.uniform())
            ang = self.rng.uniform(0.0, 2.0 * math.pi)
            x = self.centre[0] + rho * math.cos(ang)
            y = self.centre[1] + rho * math.sin(ang)
            if all(
                math.hypot(x - tx, y - ty) > r + tr + self.margin
                or z1 + self.margin < tz0
                or z0 - self.margin > tz1
                for tx, ty, tr, tz0, tz1 in self.taken
            ):
                self.reserve(x, y, r, z0, z1)
                return x, y
        return None


def _build_phantom(n_rows: int, n_cols: int, layout_seed: int) -> list[_Object]:
    """The sample's objects, in painting order (matrix first), in pixel units of this detector."""
    rng = np.random.default_rng(layout_seed)
    S = n_cols / REFERENCE_COLS  # pixels per reference pixel
    mu = {k: m.mu / S for k, m in MATERIALS.items()}  # 1/pixel at this width
    half_h = (n_rows - 1) / 2.0  # half the detector height, pixels

    def rel(material: int) -> float:  # attenuation relative to the polymer host
        return mu[material] - mu[_POLYMER]

    mx, my = 3.0 * S, -2.0 * S
    objects = [_Object("taper", mx, my, 100.0 * S, 93.0 * S, 0.35, mu[_POLYMER], _POLYMER, slope=0.04)]
    usable = 93.0 * S - abs(0.04 * half_h) - 3.0 * S
    placer = _Placer(rng, (mx, my), usable, margin=2.0 * S)

    # Resolution target: groups of three mineral bars, bar width = gap = w (reference pixels).
    x = -48.0 * S
    y_bars = 50.0 * S
    for w in (4.0, 3.0, 2.0, 1.5, 1.0):
        for k in range(3):
            objects.append(
                _Object(
                    "prism",
                    x + (2 * k + 0.5) * w * S,
                    y_bars,
                    0.5 * w * S,
                    7.0 * S,
                    0.0,
                    rel(_MINERAL),
                    _MINERAL,
                    shape_kind="rect",
                )
            )
        x += 5.0 * w * S + 6.0 * S
    placer.reserve(-48.0 * S + 0.5 * (x + 48.0 * S - 6.0 * S), y_bars, 0.5 * (x + 48.0 * S) + 2.0 * S)

    # Fine rods (discs in every slice): metal and glass, 1-3 px across.
    y_rods = -62.0 * S
    for i, (d, m) in enumerate(
        [
            (1.0, _METAL),
            (1.5, _METAL),
            (2.0, _METAL),
            (3.0, _METAL),
            (1.0, _GLASS),
            (2.0, _GLASS),
            (3.0, _GLASS),
        ]
    ):
        objects.append(
            _Object("prism", (-36.0 + 10.0 * i) * S, y_rods, 0.5 * d * S, 0.5 * d * S, 0.0, rel(m), m)
        )
    placer.reserve(-6.0 * S, y_rods, 34.0 * S)

    # Thin ellipses: glass platelets/fibre cuts 1-2 px thick, and an air crack.
    for cx, cy, a, b, phi in [
        (-70.0, -10.0, 9.0, 0.6, 0.3),
        (-62.0, 12.0, 6.0, 1.0, 1.9),
        (-50.0, -30.0, 5.0, 0.5, -0.8),
    ]:
        objects.append(_Object("prism", cx * S, cy * S, a * S, b * S, phi, rel(_GLASS), _GLASS))
        placer.reserve(cx * S, cy * S, a * S)
    objects.append(_Object("prism", 58.0 * S, -25.0 * S, 18.0 * S, 0.6 * S, -0.5, -mu[_POLYMER], _PORE))
    placer.reserve(58.0 * S, -25.0 * S, 18.0 * S)

    def z_range() -> float:
        return rng.uniform(-half_h - 4.0 * S, half_h + 4.0 * S)

    def add_ellipsoid(material: int, a: float, b: float, c: float, dmu: float | None = None) -> None:
        cz = z_range()
        pos = placer.place(max(a, b), cz - c, cz + c)
        if pos is None:
            log.debug("no room for a %s ellipsoid of radius %.1f", MATERIALS[material].name, max(a, b))
            return
        phi = rng.uniform(0.0, math.pi)
        objects.append(
            _Object(
                "ellipsoid",
                pos[0],
                pos[1],
                a,
                b,
                phi,
                rel(material) if dmu is None else dmu,
                material,
                cz=cz,
                c=c,
            )
        )

    def add_fibre(material: int, r: float, tilt_deg: float) -> None:
        tilt = math.radians(tilt_deg)
        sweep = math.tan(tilt) * (half_h + 1.0)
        phi = rng.uniform(0.0, 2.0 * math.pi)
        pos = placer.place(r / math.cos(tilt) + sweep)
        if pos is None:
            return
        objects.append(_Object("fibre", pos[0], pos[1], r, r, phi, rel(material), material, tilt=tilt))

    # Large objects first so that rejection sampling finds room for them.
    for _ in range(7):
        r = rng.uniform(8.0, 20.0) * S
        add_ellipsoid(_GLASS, r, r, r)
    for _ in range(2):
        add_fibre(_GLASS, rng.uniform(3.0, 5.0) * S, rng.uniform(10.0, 25.0))
    add_fibre(_METAL, 2.0 * S, 15.0)
    for _ in range(5):
        add_ellipsoid(
            _MINERAL, rng.uniform(6.0, 14.0) * S, rng.uniform(4.0, 10.0) * S, rng.uniform(5.0, 15.0) * S
        )
    for _ in range(4):
        r = rng.uniform(2.0, 5.0) * S
        add_ellipsoid(_METAL, r, r, r)
    for _ in range(2):  # elongated pores
        add_ellipsoid(
            _PORE,
            rng.uniform(8.0, 15.0) * S,
            rng.uniform(2.0, 4.0) * S,
            rng.uniform(3.0, 8.0) * S,
            dmu=-mu[_POLYMER],
        )
    for _ in range(20):
        r = rng.uniform(1.5, 8.0) * S
        add_ellipsoid(_PORE, r, r, r, dmu=-mu[_POLYMER])
    return objects


# --------------------------------------------------------------------------------------------
# Analytic projection and voxelisation of cross-sections
# --------------------------------------------------------------------------------------------


def _chords(shape: _Shape, sigma: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Length of the ray ``(theta, s0 + sigma)`` inside ``shape`` (s0 = the shape centre's s).

    ``theta`` broadcasts against ``sigma`` (angle axis first).
    """
    psi = theta + shape.phi
    cu, su = np.cos(psi), np.sin(psi)  # n.u and d.u (n = ray normal, d = ray direction)
    if shape.kind == "ellipse":
        rho2 = (shape.a * cu) ** 2 + (shape.b * su) ** 2
        return (2.0 * shape.a * shape.b / rho2) * np.sqrt(np.maximum(rho2 - sigma * sigma, 0.0))
    # Rectangle: intersect the ray with the two slabs |alpha| <= a and |beta| <= b, where
    # alpha(t) = sigma*cu + t*su and beta(t) = -sigma*su + t*cu.
    tiny = 1e-12
    su_ = np.where(np.abs(su) < tiny, tiny, su)
    cu_ = np.where(np.abs(cu) < tiny, tiny, cu)
    t1a, t1b = (-shape.a - sigma * cu) / su_, (shape.a - sigma * cu) / su_
    t2a, t2b = (-shape.b + sigma * su) / cu_, (shape.b + sigma * su) / cu_
    lo = np.maximum(np.minimum(t1a, t1b), np.minimum(t2a, t2b))
    hi = np.minimum(np.maximum(t1a, t1b), np.maximum(t2a, t2b))
    return np.maximum(hi - lo, 0.0)


class _Projector:
    """Accumulates analytic line integrals of shapes on a sub-sampled detector row."""

    def __init__(self, theta_rad: np.ndarray, n_cols: int, center: float, n_sub: int):
        self.theta = theta_rad[:, None, None]
        self.cos, self.sin = np.cos(theta_rad), np.sin(theta_rad)
        self.n_cols = n_cols
        self.center = center
        self.offsets = (np.arange(n_sub) + 0.5) / n_sub - 0.5  # sub-samples across a pixel
        self.pad = n_cols  # room for windows that stick out of the detector
        self.rows = np.arange(theta_rad.size)[:, None]

    def zeros(self) -> np.ndarray:
        return np.zeros((self.theta.size, self.n_cols + 2 * self.pad, self.offsets.size))

    def add(self, acc: np.ndarray, shape: _Shape) -> None:
        """Add ``dmu * chord`` of ``shape`` to ``acc``, touching only columns in its shadow."""
        radius = shape.radius
        s0 = shape.cx * self.cos - shape.cy * self.sin  # (n_angles,)
        width = int(math.ceil(2.0 * radius + 1.0)) + 2
        start = np.floor(s0 + self.center - radius - 0.5).astype(np.int64)
        cols = start[:, None] + np.arange(width)  # (n_angles, width), distinct per angle
        sigma = (cols - self.center - s0[:, None])[:, :, None] + self.offsets
        acc[self.rows, cols + self.pad] += shape.dmu * _chords(shape, sigma, self.theta)

    def crop(self, acc: np.ndarray) -> np.ndarray:
        return acc[:, self.pad : self.pad + self.n_cols]


def _render(shape: _Shape, mu: np.ndarray, labels: np.ndarray, ss: int = 3) -> None:
    """Add the shape's partial-volume attenuation to ``mu``; paint ``labels`` where it covers >= 1/2."""
    n = mu.shape[0]
    half = (n - 1) / 2.0
    r = shape.radius + 1.0
    j0, j1 = max(int(math.floor(shape.cx - r + half)), 0), min(int(math.ceil(shape.cx + r + half)) + 1, n)
    i0, i1 = max(int(math.floor(shape.cy - r + half)), 0), min(int(math.ceil(shape.cy + r + half)) + 1, n)
    if j0 >= j1 or i0 >= i1:
        return
    sub = (np.arange(ss) + 0.5) / ss - 0.5
    x = (np.arange(j0, j1)[:, None] + sub).ravel() - half - shape.cx
    y = (np.arange(i0, i1)[:, None] + sub).ravel() - half - shape.cy
    c, s = math.cos(shape.phi), math.sin(shape.phi)
    u = x[None, :] * c + y[:, None] * s
    v = -x[None, :] * s + y[:, None] * c
    if shape.kind == "ellipse":
        inside = (u / shape.a) ** 2 + (v / shape.b) ** 2 <= 1.0
    else:
        inside = (np.abs(u) <= shape.a) & (np.abs(v) <= shape.b)
    cover = inside.reshape(i1 - i0, ss, j1 - j0, ss).mean(axis=(1, 3))
    mu[i0:i1, j0:j1] += shape.dmu * cover
    labels[i0:i1, j0:j1][cover >= 0.5] = shape.label


# --------------------------------------------------------------------------------------------
# The scan
# --------------------------------------------------------------------------------------------


def simulate_tomo(**params: Any) -> dict[str, np.ndarray]:
    """Simulate a parallel-beam scan over [0, 180) degrees, with its ground truth
    (parameters and returns: :func:`_simulate_tomo`)."""
    return _simulate_tomo(**params)[0]


def simulation_model(**params: Any) -> TomoModel:
    """The noise-free model of the scan :func:`simulate_tomo` writes with these parameters."""
    return _simulate_tomo(**params)[1]


def _simulate_tomo(
    *,
    n_angles: int = 360,
    n_rows: int = 64,
    n_cols: int = 256,
    flat_counts: float = 20000.0,
    dark_counts: float = 100.0,
    read_noise: float = 2.5,
    n_flats: int = 20,
    n_darks: int = 20,
    seed: int = 0,
    layout_seed: int = 0,
    center_offset: float = 1.7,
    flux_jitter: float = 1e-3,
    n_subpixels: int = 4,
    dead_pixels: int = 1,
    hot_pixels: int = 1,
    zingers: int = 6,
) -> tuple[dict[str, np.ndarray], "TomoModel"]:
    """Simulate a parallel-beam scan over [0, 180) degrees, with its ground truth and model.

    Parameters
    ----------
    n_angles, n_rows, n_cols : int
        Projections, detector rows (slices) and detector columns.
    flat_counts : float
        Mean photon count of the open beam (1 ADU per photon), over a smooth beam profile.
    dark_counts, read_noise : float
        Mean dark offset (ADU) and Gaussian read-noise standard deviation (ADU).
    n_flats, n_darks : int
        Number of flat (open beam) and dark frames.
    seed : int
        Seed of the noise (photon, read noise, flux jitter): another seed is another
        measurement of the same sample.
    layout_seed : int
        Seed of the sample layout and the detector's fixed gain/offset pattern.
    center_offset : float
        Rotation axis position minus the detector's middle ``(n_cols - 1)/2``, pixels.
    flux_jitter : float
        Relative standard deviation of the beam flux from frame to frame.
    n_subpixels : int
        Rays per detector pixel (the detector integrates intensity, not line integrals).
    dead_pixels, hot_pixels : int
        Defective pixels of the camera (placed by ``layout_seed``): a dead pixel reads 0 in
        every frame (flats and darks too); a hot pixel reads ~8000 ADU too high in every
        projection (not in the flats), as a pixel with a leaky readout does.
    zingers : int
        Single-frame spikes (direct hits, placed by ``seed``): +15000 ADU in one projection.

    Returns
    -------
    dict
        ``projections`` (n_angles, n_rows, n_cols) uint16, ``flats`` (n_flats, n_rows, n_cols)
        uint16, ``darks`` (n_darks, n_rows, n_cols) uint16, ``theta`` (n_angles,) float64
        degrees, ``phantom`` (n_rows, n_cols, n_cols) float32 attenuation in 1/pixel on the
        reconstruction grid (origin on the rotation axis), ``labels`` (same shape) uint8
        material ids (:data:`MATERIALS`), and ``center`` (0-d float64) the true rotation axis
        column.
    """
    p = simulation_params(
        n_angles=n_angles,
        n_rows=n_rows,
        n_cols=n_cols,
        flat_counts=flat_counts,
        dark_counts=dark_counts,
        read_noise=read_noise,
        n_flats=n_flats,
        n_darks=n_darks,
        seed=seed,
        layout_seed=layout_seed,
        center_offset=center_offset,
        flux_jitter=flux_jitter,
        n_subpixels=n_subpixels,
        dead_pixels=dead_pixels,
        hot_pixels=hot_pixels,
        zingers=zingers,
    )
    if min(p["dead_pixels"], p["hot_pixels"], p["zingers"]) < 0:
        raise ValueError(f"defect counts must be >= 0, got {p}")
    if min(p["n_angles"], p["n_rows"], p["n_cols"], p["n_flats"], p["n_darks"], p["n_subpixels"]) < 1:
        raise ValueError(f"sizes must be positive, got {p}")
    if p["n_cols"] < 32:
        raise ValueError(f"n_cols must be at least 32 to hold the sample, got {p['n_cols']}")
    t_start = time.perf_counter()
    n_angles, n_rows, n_cols = p["n_angles"], p["n_rows"], p["n_cols"]
    theta = np.arange(n_angles, dtype=np.float64) * (180.0 / n_angles)
    center = (n_cols - 1) / 2.0 + p["center_offset"]

    objects = _build_phantom(n_rows, n_cols, p["layout_seed"])
    projector = _Projector(np.deg2rad(theta), n_cols, center, p["n_subpixels"])

    # z-invariant objects are projected and voxelised once and reused for every row.
    static_acc = projector.zeros()
    static_mu = np.zeros((n_cols, n_cols))
    static_labels = np.zeros((n_cols, n_cols), np.uint8)
    for obj in objects:
        if obj.static:
            shape = obj.section(0.0)
            projector.add(static_acc, shape)
            _render(shape, static_mu, static_labels)
    static_line = projector.crop(static_acc)

    transmission = np.empty((n_angles, n_rows, n_cols))
    phantom = np.empty((n_rows, n_cols, n_cols), np.float32)
    labels = np.empty((n_rows, n_cols, n_cols), np.uint8)
    dynamic = [obj for obj in objects if not obj.static]
    for row in range(n_rows):
        z = row - (n_rows - 1) / 2.0
        acc = projector.zeros()
        mu = static_mu.copy()
        lab = np.zeros((n_cols, n_cols), np.uint8)
        _render(dynamic[0].section(z), mu, lab)  # the matrix, painted first
        lab[static_labels > 0] = static_labels[static_labels > 0]
        for obj in dynamic:
            shape = obj.section(z)
            if shape is None:
                continue
            projector.add(acc, shape)
            if obj is not dynamic[0]:
                _render(shape, mu, lab)
        line = projector.crop(acc) + static_line
        transmission[:, row, :] = np.exp(-line).mean(axis=-1)
        phantom[row] = mu
        labels[row] = lab
    t_geom = time.perf_counter() - t_start

    # Detector: fixed pattern from the layout seed (same camera for every scan), noise from seed.
    det_rng = np.random.default_rng([p["layout_seed"], 1])
    yv = (np.arange(n_rows) - (n_rows - 1) / 2.0) / max(n_rows, 8)
    xh = (np.arange(n_cols) - (n_cols - 1) / 2.0) / n_cols
    profile = (
        np.exp(-0.5 * (yv / 0.9) ** 2)[:, None]
        * ((1.0 - 0.25 * xh**2) * (1.0 + 0.01 * np.sin(2.0 * np.pi * 5.3 * xh + 0.7)))[None, :]
    )
    gain = 1.0 + 0.01 * det_rng.standard_normal((n_rows, n_cols))  # scintillator/pixel gain
    beam = p["flat_counts"] * profile * gain / np.mean(profile * gain)
    dark_map = (
        p["dark_counts"]
        + 1.5 * det_rng.standard_normal(n_cols)[None, :]
        + 1.0 * det_rng.standard_normal((n_rows, n_cols))
    )

    rng = np.random.default_rng(p["seed"])
    flats = _frames(rng, p, beam, dark_map, 1.0, p["n_flats"])
    darks = _frames(rng, p, beam, dark_map, 0.0, p["n_darks"])
    projections = _frames(rng, p, beam, dark_map, transmission, n_angles)

    # Detector defects, away from the border so every one has neighbours on its row.
    dead: list[tuple[int, int]] = []
    hot: list[tuple[int, int]] = []
    n_def = p["dead_pixels"] + p["hot_pixels"]
    if n_def:
        inner = [(r, c) for r in range(1, n_rows - 1) for c in range(2, n_cols - 2)]
        picks = det_rng.choice(len(inner), size=min(n_def, len(inner)), replace=False)
        spots = [inner[i] for i in picks]
        dead, hot = spots[: p["dead_pixels"]], spots[p["dead_pixels"]:]
    zingers = [(int(rng.integers(n_angles)), int(rng.integers(n_rows)), int(rng.integers(n_cols)))
               for _ in range(p["zingers"])]
    _defects(projections, flats, darks, dead=dead, hot=hot, zingers=zingers)
    model = TomoModel(params=p, transmission=transmission, beam=beam, dark_map=dark_map, dead=dead, hot=hot,
                      zingers=zingers, theta=theta)
    log.info(
        "simulated tomo scan %s in %.2f s (geometry %.2f s); min transmission %.3f",
        projections.shape,
        time.perf_counter() - t_start,
        t_geom,
        transmission.min(),
    )
    return {
        "projections": projections,
        "flats": flats,
        "darks": darks,
        "theta": theta,
        "phantom": phantom,
        "labels": labels,
        "center": np.asarray(center, dtype=np.float64),
    }, model


def _frames(rng: np.random.Generator, p: Mapping[str, Any], beam: np.ndarray, dark_map: np.ndarray,
            expected: np.ndarray | float, n: int) -> np.ndarray:
    """``n`` camera frames of ``expected`` transmission: flux jitter, Poisson photons, dark
    offset, read noise, rounded to uint16."""
    flux = 1.0 + p["flux_jitter"] * rng.standard_normal(n)
    photons = rng.poisson(beam[None] * flux[:, None, None] * expected)
    counts = dark_map + photons + rng.normal(0.0, p["read_noise"], photons.shape)
    return np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def _defects(projections: np.ndarray, flats: np.ndarray | None, darks: np.ndarray | None, *,
             dead: list[tuple[int, int]], hot: list[tuple[int, int]], zingers: list[tuple[int, int, int]]) -> None:
    """The camera's defects, in place: dead pixels read 0 everywhere, hot ones 8000 ADU high in
    every projection, zingers +15000 ADU in one projection."""
    top = np.iinfo(np.uint16).max if projections.dtype == np.uint16 else np.inf
    for r, c in dead:
        projections[:, r, c] = 0
        for frames in (flats, darks):
            if frames is not None:
                frames[:, r, c] = 0
    for r, c in hot:
        projections[:, r, c] = np.minimum(projections[:, r, c].astype(np.float64) + 8000, top).astype(projections.dtype)
    for a, r, c in zingers:
        projections[a, r, c] = min(float(projections[a, r, c]) + 15000, top)


@dataclasses.dataclass(frozen=True)
class TomoModel:
    """What a simulated scan is made of: the sample's transmission (angles, rows, columns), the
    camera's open beam and dark level (rows, columns), its defects and the scan's zingers.

    :meth:`expected` is the noise-free measurement (the mean of infinitely many scans);
    :meth:`measure` is one more independent scan of the same sample with the same camera
    (flux jitter, Poisson photons and read noise drawn from ``rng``), both with exact
    (noise-free) flats and darks, so two of them differ by the projections' counting noise only.
    """

    params: Mapping[str, Any]
    transmission: np.ndarray
    beam: np.ndarray
    dark_map: np.ndarray
    dead: list[tuple[int, int]]
    hot: list[tuple[int, int]]
    zingers: list[tuple[int, int, int]]
    theta: np.ndarray

    def _exact_references(self) -> tuple[np.ndarray, np.ndarray]:
        flats = np.repeat((self.dark_map + self.beam)[None], self.params["n_flats"], axis=0).astype(np.float32)
        darks = np.repeat(self.dark_map[None], self.params["n_darks"], axis=0).astype(np.float32)
        return flats, darks

    def expected(self) -> dict[str, np.ndarray]:
        """Projections, flats and darks without noise (float32)."""
        projections = (self.dark_map + self.beam * self.transmission).astype(np.float32)
        flats, darks = self._exact_references()
        _defects(projections, flats, darks, dead=self.dead, hot=self.hot, zingers=self.zingers)
        return {"projections": projections, "flats": flats, "darks": darks, "theta": self.theta}

    def measure(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One independent scan (uint16 projections) with exact flats and darks."""
        projections = _frames(rng, self.params, self.beam, self.dark_map, self.transmission, len(self.theta))
        flats, darks = self._exact_references()
        _defects(projections, flats, darks, dead=self.dead, hot=self.hot, zingers=self.zingers)
        return {"projections": projections, "flats": flats, "darks": darks, "theta": self.theta}


def _attr_value(value: Any) -> Any:
    return (
        value.decode()
        if isinstance(value, bytes)
        else value.item() if isinstance(value, np.generic) else value
    )


def read_simulation_attrs(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``/simulation`` attributes of a file written by :func:`write_dataexchange`.

    Returns None when the file has no ``/simulation`` group.  Opened read-only.
    """
    with h5py.File(path, "r") as f:
        if "simulation" not in f:
            return None
        return {k: _attr_value(v) for k, v in f["simulation"].attrs.items()}


def write_dataexchange(
    path: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    *,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write a scan in the DataExchange layout, atomically (temporary file + ``os.replace``).

    Parameters
    ----------
    path : path-like
        Destination; its folder is created if needed.
    arrays : mapping
        ``projections``, ``flats``, ``darks``, ``theta`` (degrees); optional ground truth
        ``phantom``, ``labels`` and ``center`` go to ``/phantom/mu``, ``/phantom/labels`` and
        ``/phantom/center``.
    attrs : mapping, optional
        Simulation parameters, stored as attributes of ``/simulation`` (scalars or strings).

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["implements"] = "exchange:simulation"
        ex = f.create_group("exchange")
        ex.create_dataset("data", data=arrays["projections"])
        ex.create_dataset("data_white", data=arrays["flats"])
        ex.create_dataset("data_dark", data=arrays["darks"])
        ex.create_dataset("theta", data=np.asarray(arrays["theta"], np.float64)).attrs["units"] = (
            "degrees"
        )
        if any(k in arrays for k in ("phantom", "labels", "center")):
            gt = f.create_group("phantom")
            gt.attrs["materials"] = json.dumps(
                {
                    str(m.id): {
                        "name": m.name,
                        "mu_per_pixel": m.mu * REFERENCE_COLS / arrays["projections"].shape[-1],
                    }
                    for m in MATERIALS.values()
                }
            )
            if "phantom" in arrays:
                ds = gt.create_dataset(
                    "mu", data=arrays["phantom"], compression="gzip", compression_opts=1, shuffle=True
                )
                ds.attrs["units"] = "1/pixel"
            if "labels" in arrays:
                gt.create_dataset("labels", data=arrays["labels"], compression="gzip", compression_opts=1)
            if "center" in arrays:
                gt.create_dataset("center", data=np.asarray(arrays["center"], np.float64))
        sim = f.create_group("simulation")
        for key, value in (attrs or {}).items():
            sim.attrs[key] = value
    return path
