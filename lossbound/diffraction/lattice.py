"""Lattice geometry of stills with a known cell: detector plane <-> reciprocal space, basis
choice from the DPS vectors, least-squares refinement, prediction, lattice symmetry and
misorientation.

Pure numpy/scipy, no cctbx and nothing else of LossBound: the indexing worker
(``pipelines/sx/index_worker.py``) loads this file by path after cctbx; the sx pipeline and
the indexing evaluator import it normally.

Conventions. Lab frame of pyFAI: sample at the origin, beam along +z, lengths in mm,
reciprocal vectors in 1/Å with ``r = s1 - s0``. Detector coordinates ``(y, x)`` are
corner-based pixels (pixel ``(i, j)`` spans ``[i, i+1) x [j, j+1)``), as the spot finder
reports them. A basis ``A`` holds the direct cell vectors ``a, b, c`` as rows (Å), so the
Miller indices of a reciprocal vector ``r`` are ``A @ r`` and the reciprocal basis is
``inv(A)`` (columns ``a*, b*, c*``).
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["DetectorPlane", "align", "candidate_bases", "direct_matrix", "index_from_basis_vectors", "lattice_system",
           "misorientation_deg", "misorientation_sigma", "predict_reflections", "refine_detector", "shifted_plane",
           "symmetry_ops"]


@dataclass(frozen=True)
class DetectorPlane:
    """A flat detector: lab position (mm) of pixel corner (0, 0), the steps of one pixel
    along the rows (``slow``) and the columns (``fast``), and the wavelength (Å)."""

    origin: tuple[float, float, float]
    slow: tuple[float, float, float]
    fast: tuple[float, float, float]
    wavelength: float

    @property
    def s0(self) -> np.ndarray:
        return np.array([0.0, 0.0, 1.0 / self.wavelength])

    def lab(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        y, x = np.asarray(y, float), np.asarray(x, float)
        return np.asarray(self.origin) + y[:, None] * np.asarray(self.slow) + x[:, None] * np.asarray(self.fast)

    def rlp(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Reciprocal-space vectors (1/Å) of detector positions, on the Ewald sphere."""
        lab = self.lab(y, x)
        s1 = lab / np.linalg.norm(lab, axis=1)[:, None] / self.wavelength
        return s1 - self.s0

    def project(self, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Detector position ``(y, x)`` along ``s1 = s0 + r`` (NaN where the ray misses the
        plane); ``r`` need not lie on the Ewald sphere (stills)."""
        s1 = np.asarray(r, float) + self.s0
        m = np.empty((len(s1), 3, 3))
        m[:, :, 0] = self.slow
        m[:, :, 1] = self.fast
        m[:, :, 2] = -s1
        rhs = np.broadcast_to(-np.asarray(self.origin, float), (len(s1), 3))
        with np.errstate(all="ignore"):
            ok = np.abs(np.linalg.det(m)) > 1e-12
            sol = np.full((len(s1), 3), np.nan)
            if ok.any():
                sol[ok] = np.linalg.solve(m[ok], rhs[ok][:, :, None])[:, :, 0]
        sol[~(sol[:, 2] > 0)] = np.nan  # behind the sample
        return sol[:, 0], sol[:, 1]

    def d_min(self, shape: tuple[int, int]) -> float:
        """The finest resolution (Å) any pixel of a detector of ``shape`` sees."""
        ys = np.array([0, 0, shape[0], shape[0]], float)
        xs = np.array([0, shape[1], 0, shape[1]], float)
        q = np.linalg.norm(self.rlp(ys, xs), axis=1).max()
        return float(1.0 / q)


# -- cells ---------------------------------------------------------------------------------------
def direct_matrix(cell: Sequence[float]) -> np.ndarray:
    """Rows = a, b, c in the standard (PDB) orthogonalisation."""
    a, b, c, al, be, ga = (float(v) for v in cell)
    al, be, ga = np.radians([al, be, ga])
    cx = c * np.cos(be)
    cy = c * (np.cos(al) - np.cos(be) * np.cos(ga)) / np.sin(ga)
    cz = math.sqrt(max(c * c - cx * cx - cy * cy, 1e-12))
    return np.array([[a, 0, 0], [b * np.cos(ga), b * np.sin(ga), 0], [cx, cy, cz]])


def metric(cell: Sequence[float]) -> np.ndarray:
    a = direct_matrix(cell)
    return a @ a.T


def cell_of(basis: np.ndarray) -> np.ndarray:
    """``[a, b, c, alpha, beta, gamma]`` of a basis (rows)."""
    g = basis @ basis.T
    lengths = np.sqrt(np.diag(g))
    cosines = [g[1, 2] / (lengths[1] * lengths[2]), g[0, 2] / (lengths[0] * lengths[2]),
               g[0, 1] / (lengths[0] * lengths[1])]
    return np.concatenate([lengths, np.degrees(np.arccos(np.clip(cosines, -1, 1)))])


def lattice_system(cell: Sequence[float], *, tol: float = 1e-3) -> str:
    """The lattice system the cell's equalities imply (what refinement keeps fixed)."""
    a, b, c, al, be, ga = (float(v) for v in cell)

    def eq(u: float, v: float) -> bool:
        return abs(u - v) <= tol * max(abs(u), abs(v))

    right = [eq(x, 90.0) for x in (al, be, ga)]
    if all(right):
        if eq(a, b) and eq(b, c):
            return "cubic"
        return "tetragonal" if eq(a, b) else "orthorhombic"
    if right[0] and right[1] and eq(ga, 120.0) and eq(a, b):
        return "hexagonal"
    if right[0] and right[2]:
        return "monoclinic"
    return "triclinic"


_CELL_PARAMS: dict[str, tuple[Callable[[np.ndarray], list[float]], Callable[[np.ndarray], list[float]]]] = {
    # system: (cell -> free parameters, free parameters -> cell)
    "cubic": (lambda c: [c[:3].mean()], lambda p: [p[0], p[0], p[0], 90, 90, 90]),
    "tetragonal": (lambda c: [c[:2].mean(), c[2]], lambda p: [p[0], p[0], p[1], 90, 90, 90]),
    "hexagonal": (lambda c: [c[:2].mean(), c[2]], lambda p: [p[0], p[0], p[1], 90, 90, 120]),
    "orthorhombic": (lambda c: list(c[:3]), lambda p: [p[0], p[1], p[2], 90, 90, 90]),
    "monoclinic": (lambda c: [*c[:3], c[4]], lambda p: [p[0], p[1], p[2], 90, p[3], 90]),
    "triclinic": (lambda c: list(c), lambda p: list(p)),
}


def _cell_params(system: str, cell: Sequence[float] | None = None):
    """(cell -> free parameters, free parameters -> cell) of a lattice system; ``fixed``:
    none, the cell is ``cell``."""
    if system == "fixed":
        fixed = [float(v) for v in cell]
        return (lambda c: []), (lambda p: fixed)
    return _CELL_PARAMS[system]


def symmetry_ops(cell: Sequence[float], *, tol: float = 0.02) -> np.ndarray:
    """Integer matrices ``M`` (det +1, entries -1..1) that map the lattice onto itself:
    ``M @ A`` is as good a basis as ``A`` (the rotations of the lattice's holohedry, e.g.
    8 for a tetragonal cell). Indexing the same crystal twice may give any of them."""
    return _symmetry_ops(tuple(float(v) for v in cell), float(tol)).copy()


@functools.lru_cache(maxsize=8)
def _symmetry_ops(cell: tuple[float, ...], tol: float) -> np.ndarray:
    g = metric(cell)
    # each metric entry against its own scale (sqrt(g_ii g_jj)): a tolerance on the largest
    # entry would call an orthorhombic 58 x 61 x 151 cell tetragonal
    scale = np.sqrt(np.outer(np.diag(g), np.diag(g)))
    ops = []
    for entries in itertools.product((-1, 0, 1), repeat=9):
        m = np.array(entries, float).reshape(3, 3)
        if round(np.linalg.det(m)) != 1:
            continue
        if np.all(np.abs(m @ g @ m.T - g) <= tol * scale):
            ops.append(m)
    return np.array(ops)


def _rotation_angle_deg(rot: np.ndarray) -> float:
    # ||R - I||_F = 2 sqrt(2) sin(angle / 2): exact near 0, where arccos((tr R - 1) / 2) turns
    # one rounding of the trace into ~1e-6 degrees between two identical orientations
    s = np.linalg.norm(rot - np.eye(3)) / (2 * math.sqrt(2))
    return float(np.degrees(2 * np.arcsin(min(s, 1.0))))


def _nearest_rotation(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    return r


def align(basis: np.ndarray, reference: np.ndarray, ops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The smallest lab-frame rotation ``R`` taking ``reference`` onto any symmetry-equivalent
    setting ``M @ basis``, and that ``M``: ``hkl_reference = M @ hkl_basis`` maps the Miller
    indices of one setting onto the other. Both bases right-handed (as refinement leaves them)."""
    best, best_rot, best_m = math.inf, np.eye(3), np.eye(3)
    for m in ops:
        # rotation R with (M A).T ~ R @ reference.T (columns: cell vectors in the lab)
        rot = _nearest_rotation((m @ basis).T @ np.linalg.inv(reference.T))
        angle = _rotation_angle_deg(rot)
        if angle < best:
            best, best_rot, best_m = angle, rot, m
    return best_rot, best_m


def misorientation_deg(basis: np.ndarray, reference: np.ndarray, ops: np.ndarray) -> tuple[float, np.ndarray]:
    """Smallest rotation angle (degrees) between ``reference`` and any symmetry-equivalent
    setting of ``basis``, and the ``M`` of :func:`align`."""
    rot, m = align(basis, reference, ops)
    return _rotation_angle_deg(rot), m


def rotation_vector(rot: np.ndarray) -> np.ndarray:
    """Axis times angle (radians) of a rotation matrix."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_matrix(rot).as_rotvec()


def misorientation_sigma(basis: np.ndarray, reference: np.ndarray, covariance: np.ndarray, ops: np.ndarray) -> float:
    """The misorientation in units of the reference orientation's own standard error: the
    Mahalanobis length of the rotation vector under ``covariance`` (3x3, rad², lab frame,
    from the refinement). Stills pin the rotation about the beam well and the two others
    poorly, so a plain angle over-weights what the data cannot tell anyway."""
    rot, _ = align(basis, reference, ops)
    v = rotation_vector(rot)
    try:
        return float(math.sqrt(max(v @ np.linalg.solve(covariance, v), 0.0)))
    except np.linalg.LinAlgError:
        return math.nan


# -- indexing ------------------------------------------------------------------------------------
def _third_axis(u: np.ndarray, v: np.ndarray, g: np.ndarray, i: int, j: int, k: int) -> list[np.ndarray]:
    """The two vectors ``w`` with ``w.u = g[i,k]``, ``w.v = g[j,k]`` and ``|w|² = g[k,k]``."""
    p = np.linalg.lstsq(np.array([u, v]), np.array([g[i, k], g[j, k]]), rcond=None)[0]
    n = np.cross(u, v)
    n /= np.linalg.norm(n)
    h2 = g[k, k] - p @ p
    if h2 <= 0:
        return []
    h = math.sqrt(h2)
    return [p + h * n, p - h * n]


def candidate_bases(vectors: np.ndarray, cell: Sequence[float], *, length_tol: float = 0.06,
                    angle_tol_deg: float = 4.0, scales: Sequence[float] = (0.97, 0.985, 1.0, 1.015, 1.03)
                    ) -> list[np.ndarray]:
    """Bases (rows a, b, c) built from pairs of basis-search vectors whose lengths and angle
    match two axes of the known cell; the third axis comes from the cell metric, its length
    scanned over ``scales`` (a nominal cell ~2 % off can trap the refinement in a wrong-index
    minimum when the missing axis gets the nominal length)."""
    vectors = np.asarray(vectors, float).reshape(-1, 3)
    g = metric(cell)
    lengths = np.sqrt(np.diag(g))
    norms = np.linalg.norm(vectors, axis=1)
    out = []
    for i, j, k in ((0, 1, 2), (0, 2, 1), (1, 2, 0)):
        target = math.degrees(math.acos(g[i, j] / (lengths[i] * lengths[j])))
        for p in np.flatnonzero(np.abs(norms / lengths[i] - 1) < length_tol):
            for q in np.flatnonzero(np.abs(norms / lengths[j] - 1) < length_tol):
                if p == q:
                    continue
                cos_pq = vectors[p] @ vectors[q] / (norms[p] * norms[q])
                for sign in (1.0, -1.0):
                    if abs(math.degrees(math.acos(np.clip(sign * cos_pq, -1, 1))) - target) >= angle_tol_deg:
                        continue
                    u, v = vectors[p], sign * vectors[q]
                    for w in _third_axis(u, v, g, i, j, k):
                        for s in scales:
                            basis = np.zeros((3, 3))
                            basis[i], basis[j], basis[k] = u, v, w * s
                            out.append(basis)
    return out


def _residuals(basis: np.ndarray, y: np.ndarray, x: np.ndarray, rlp: np.ndarray, plane: DetectorPlane
               ) -> tuple[np.ndarray, np.ndarray]:
    """Nearest Miller indices of each spot and the pixel distance to their prediction."""
    hkl = np.round(rlp @ basis.T)
    py, px = plane.project(hkl @ np.linalg.inv(basis).T)
    d = np.hypot(py - y, px - x)
    d[~np.isfinite(d) | np.all(hkl == 0, axis=1)] = np.inf
    return hkl, d


def _refine(basis0: np.ndarray, y: np.ndarray, x: np.ndarray, rlp: np.ndarray, plane: DetectorPlane,
            system: str, tolerances: Sequence[float], cell: Sequence[float] | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Orientation (rotation vector) and the system's free cell parameters by least squares
    on pixel residuals of the spots within each successive tolerance (Miller indices fixed
    per round); returns the basis and the covariance (rad², lab frame) of its orientation,
    from the last round's Jacobian and residual variance (NaN if it did not run). With
    ``system='fixed'`` the cell is ``cell`` and only the orientation is refined."""
    from scipy.optimize import least_squares
    from scipy.spatial.transform import Rotation

    if np.linalg.det(basis0) < 0:  # -A indexes the same spots with -hkl, and is right-handed
        basis0 = -basis0
    to_params, to_cell = _cell_params(system, cell)
    p_cell = np.asarray(to_params(cell_of(basis0)), float)
    u0 = _nearest_rotation(basis0.T @ np.linalg.inv(direct_matrix(to_cell(p_cell)).T))
    params = np.concatenate([np.zeros(3), p_cell])
    covariance = np.full((3, 3), np.nan)

    def build(p: np.ndarray) -> np.ndarray:
        return (Rotation.from_rotvec(p[:3]).as_matrix() @ u0 @ direct_matrix(to_cell(p[3:])).T).T

    for tol in tolerances:
        hkl, d = _residuals(build(params), y, x, rlp, plane)
        sel = d < tol
        if sel.sum() < 6:
            break
        h, yo, xo = hkl[sel], y[sel], x[sel]

        def resid(p: np.ndarray) -> np.ndarray:
            py, px = plane.project(h @ np.linalg.inv(build(p)).T)
            return np.nan_to_num(np.concatenate([py - yo, px - xo]), nan=50.0, posinf=50.0, neginf=-50.0)

        fit = least_squares(resid, params, loss="soft_l1", f_scale=2.0, x_scale="jac")
        params = fit.x
        dof = fit.fun.size - params.size
        if dof > 0:
            with np.errstate(all="ignore"):
                cov = np.linalg.pinv(fit.jac.T @ fit.jac) * float(fit.fun @ fit.fun) / dof
            covariance = cov[:3, :3]
    # the rotation vector was applied about the lab axes on the left of u0, where p = 0
    # (the refined rotation is small), so its covariance is the lab-frame one
    return build(params), covariance


def index_from_basis_vectors(y: np.ndarray, x: np.ndarray, vectors: np.ndarray, cell: Sequence[float],
                             plane: DetectorPlane, *, tolerance_px: float = 3.0, min_fraction: float = 0.25,
                             cell_tolerance: float = 0.05, n_refine: int = 3, refine_cell: bool = True
                             ) -> dict[str, Any]:
    """Orientation of one still from its spots and the basis-search vectors (DPS).

    Candidate bases matching the known ``cell`` are scored by the fraction of spots predicted
    within 6 px, the best ``n_refine`` are refined, and the best refined one is kept. A
    random lattice or a wrong cell indexes 3–6 % of the spots within 3 px, so a frame counts
    as indexed only when at least ``min_fraction`` are within ``tolerance_px`` *and* the
    refined cell is within ``cell_tolerance`` (relative lengths; the same in degrees/100
    for the angles) of the known one. ``refine_cell=False`` refines the orientation only, with
    ``cell`` as it is (one still hardly fixes the cell axis along the beam: a free one can
    settle a few per cent off, into a minimum that indexes the spots differently).

    Returns a dict: ``indexed``, ``basis`` (3x3, NaN if none), ``cell`` (6), ``hkl`` (n x 3),
    ``distance_px`` (n), ``fraction``, ``rmsd_px``, ``orientation_covariance`` (3x3, rad²),
    ``candidates``, ``reason``.
    """
    y, x = np.asarray(y, float), np.asarray(x, float)
    n = y.size
    out: dict[str, Any] = {"indexed": False, "basis": np.full((3, 3), np.nan), "cell": np.full(6, np.nan),
                           "hkl": np.zeros((n, 3)), "distance_px": np.full(n, np.inf), "fraction": 0.0,
                           "rmsd_px": math.nan, "candidates": 0, "reason": ""}
    cands = candidate_bases(vectors, cell)
    out["candidates"] = len(cands)
    if not cands:
        out["reason"] = "no basis-search vectors match the cell"
        return out
    rlp = plane.rlp(y, x)
    scores = [float(np.mean(_residuals(b, y, x, rlp, plane)[1] < 6.0)) for b in cands]
    system = lattice_system(cell) if refine_cell else "fixed"
    best: tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    for i in np.argsort(scores)[::-1][:n_refine]:
        basis, covariance = _refine(cands[i], y, x, rlp, plane, system, (8.0, 5.0, tolerance_px), cell)
        hkl, d = _residuals(basis, y, x, rlp, plane)
        frac = float(np.mean(d < tolerance_px))
        if best is None or frac > best[0]:
            best = (frac, basis, hkl, d, covariance)
    assert best is not None
    frac, basis, hkl, d, covariance = best
    refined = cell_of(basis)
    deviation = np.concatenate([np.abs(refined[:3] / np.asarray(cell[:3], float) - 1),
                                np.abs(refined[3:] - np.asarray(cell[3:], float)) / 100.0])
    ok = d < tolerance_px
    out.update(basis=basis, cell=refined, hkl=hkl, distance_px=d, fraction=frac, orientation_covariance=covariance,
               rmsd_px=float(np.sqrt(np.mean(d[ok] ** 2))) if ok.any() else math.nan)
    if frac < min_fraction:
        out["reason"] = f"{frac:.0%} of the spots within {tolerance_px:g} px (< {min_fraction:.0%})"
    elif deviation.max() > cell_tolerance:
        out["reason"] = f"refined cell {np.round(refined, 2).tolist()} is {deviation.max():.1%} off the known cell"
    else:
        out["indexed"] = True
    return out


def shifted_plane(plane: DetectorPlane, d_slow: float, d_fast: float, d_normal: float) -> DetectorPlane:
    """``plane`` moved by ``d_slow``, ``d_fast`` (mm, within the plane: the beam centre moves the
    other way, as pyFAI's ``poni1``/``poni2`` grow) and ``d_normal`` (mm, away from the sample:
    pyFAI's ``dist`` grows)."""
    slow, fast, origin = (np.asarray(v, float) for v in (plane.slow, plane.fast, plane.origin))
    su, fu = slow / np.linalg.norm(slow), fast / np.linalg.norm(fast)
    normal = np.cross(su, fu)
    normal /= np.linalg.norm(normal)
    if normal @ origin < 0:
        normal = -normal
    moved = origin - d_slow * su - d_fast * fu + d_normal * normal
    return DetectorPlane(origin=tuple(map(float, moved)), slow=plane.slow, fast=plane.fast,
                         wavelength=plane.wavelength)


def refine_detector(stills: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], cell: Sequence[float],
                    plane: DetectorPlane, *, tolerance_px: float = 3.0, rounds: int = 2,
                    refine_cell: bool = True) -> dict[str, Any]:
    """The detector's position (beam centre and distance), the cell and every still's
    orientation, refined together by least squares on the pixel residuals of every indexed
    spot of every still.

    Parameters
    ----------
    stills : sequence of (y, x, basis)
        Per indexed still: its spots (corner-based pixels) and its basis (rows a, b, c, Å).
    cell : sequence of 6 floats
        The cell to start from; its lattice system fixes what is refined.
    plane : DetectorPlane
        The detector as the header or PONI has it.
    tolerance_px : float
        Spots within this distance of their prediction take part (Miller indices from the
        current model, reassigned each of ``rounds`` rounds).

    Returns
    -------
    dict
        ``shift_mm`` (slow, fast, normal: see :func:`shifted_plane`), ``plane``, ``cell``,
        ``bases`` (per still), ``rmsd_before_px`` / ``rmsd_after_px`` (spots within
        ``tolerance_px``, before and after), ``spots`` (used), ``rounds``.
    """
    from scipy.optimize import least_squares
    from scipy.spatial.transform import Rotation

    system = lattice_system(cell) if refine_cell else "fixed"
    to_params, to_cell = _cell_params(system, cell)
    p_cell0 = np.asarray(to_params(np.asarray(cell, float)), float)
    d0 = direct_matrix(to_cell(p_cell0)).T
    u0 = []
    for _, _, basis in stills:
        b = -basis if np.linalg.det(basis) < 0 else basis
        u0.append(_nearest_rotation(b.T @ np.linalg.inv(d0)))
    nf, nc = len(stills), p_cell0.size

    def unpack(p: np.ndarray):
        pl = shifted_plane(plane, *p[:3])
        cm = direct_matrix(to_cell(p[3:3 + nc])).T
        bases = [(Rotation.from_rotvec(p[3 + nc + 3 * i: 6 + nc + 3 * i]).as_matrix() @ u0[i] @ cm).T
                 for i in range(nf)]
        return pl, bases

    def assign(p: np.ndarray):
        pl, bases = unpack(p)
        sel = []
        for (y, x, _), b in zip(stills, bases):
            hkl, d = _residuals(b, y, x, pl.rlp(y, x), pl)
            ok = d < tolerance_px
            sel.append((y[ok], x[ok], hkl[ok]))
        return sel

    def rmsd(p: np.ndarray, sel) -> tuple[float, int]:
        pl, bases = unpack(p)
        d2 = []
        for (y, x, hkl), b in zip(sel, bases):
            py, px = pl.project(hkl @ np.linalg.inv(b).T)
            d2.append((py - y) ** 2 + (px - x) ** 2)
        d2 = np.concatenate(d2) if d2 else np.zeros(0)
        d2 = d2[np.isfinite(d2)]
        return (float(np.sqrt(d2.mean())) if d2.size else math.nan), int(d2.size)

    params = np.concatenate([np.zeros(3), p_cell0, np.zeros(3 * nf)])
    sel = assign(params)
    before, _ = rmsd(params, sel)
    for _ in range(max(1, rounds)):
        def resid(p: np.ndarray, sel=sel) -> np.ndarray:
            pl, bases = unpack(p)
            out = []
            for (y, x, hkl), b in zip(sel, bases):
                py, px = pl.project(hkl @ np.linalg.inv(b).T)
                out += [py - y, px - x]
            return np.nan_to_num(np.concatenate(out), nan=50.0, posinf=50.0, neginf=-50.0)

        params = least_squares(resid, params, loss="soft_l1", f_scale=2.0, x_scale="jac").x
        sel = assign(params)
    after, n = rmsd(params, sel)
    pl, bases = unpack(params)
    return {"shift_mm": [float(v) for v in params[:3]], "plane": pl, "cell": [float(v) for v in to_cell(params[3:3 + nc])],
            "bases": bases, "rmsd_before_px": before, "rmsd_after_px": after, "spots": n, "rounds": rounds}


def predict_reflections(basis: np.ndarray, plane: DetectorPlane, shape: tuple[int, int], *,
                        max_excitation: float, d_min: float | None = None, edge: int = 3) -> dict[str, np.ndarray]:
    """Reflections of ``basis`` in diffraction condition (|excitation error| ≤
    ``max_excitation``, 1/Å) that fall on the detector at least ``edge`` pixels from its
    border: ``hkl``, ``y``, ``x``, ``excitation``."""
    d_min = plane.d_min(shape) if d_min is None else d_min
    recip = np.linalg.inv(basis)  # columns a*, b*, c*
    limits = [int(math.ceil(np.linalg.norm(basis[i]) / d_min)) for i in range(3)]
    hkl = _near_ewald_sphere(recip, plane, limits, max_excitation)
    r = hkl @ recip.T
    r_len = np.linalg.norm(r, axis=1)
    s1 = r + plane.s0
    eps = np.linalg.norm(s1, axis=1) - 1.0 / plane.wavelength
    sel = (r_len > 0) & (r_len <= 1.0 / d_min) & (np.abs(eps) <= max_excitation) & (s1[:, 2] > 0)
    hkl, r, eps = hkl[sel], r[sel], eps[sel]
    y, x = plane.project(r)
    on = np.isfinite(y) & (y >= edge) & (y <= shape[0] - edge) & (x >= edge) & (x <= shape[1] - edge)
    return {"hkl": hkl[on].astype(np.int32), "y": y[on], "x": x[on], "excitation": eps[on]}


def _near_ewald_sphere(recip: np.ndarray, plane: DetectorPlane, limits: list[int], max_excitation: float
                       ) -> np.ndarray:
    """Every (h, k, l) within ``limits`` whose l lies where ``| |s0 + r| - 1/lambda |`` can be
    at most ``max_excitation`` — a superset of the reflections in diffraction condition, one
    l-interval pair per (h, k) instead of the whole box (thaumatin: ~1 % of it); rows in the
    box's (h, k, l) order, so the caller's exact selection gives what the whole box gives."""
    (mh, mk, ml) = limits
    h, k = (a.ravel() for a in np.meshgrid(np.arange(-mh, mh + 1), np.arange(-mk, mk + 1), indexing="ij"))
    a_star, b_star, c_star = recip[:, 0], recip[:, 1], recip[:, 2]
    q = np.outer(h, a_star) + np.outer(k, b_star) + plane.s0   # s1 = q + l c*
    qa, qb, qc = float(c_star @ c_star), q @ c_star, np.einsum("ij,ij->i", q, q)
    k0 = 1.0 / plane.wavelength

    def roots(radius: float) -> tuple[np.ndarray, np.ndarray]:
        # |q + l c*|^2 = radius^2: qa l^2 + 2 qb l + qc - radius^2 = 0
        disc = qb * qb - qa * (qc - radius * radius)
        sq = np.sqrt(np.maximum(disc, 0.0))
        lo, hi = (-qb - sq) / qa, (-qb + sq) / qa
        return np.where(disc >= 0, lo, np.nan), np.where(disc >= 0, hi, np.nan)

    # one unit of l and a relative 1e-9 of slack: a superset, never a miss at an edge
    out_lo, out_hi = roots(k0 + max_excitation * (1 + 1e-9))
    inner = k0 - max_excitation * (1 + 1e-9)
    in_lo, in_hi = roots(inner) if inner > 0 else (np.full_like(out_lo, np.nan), np.full_like(out_lo, np.nan))
    intervals = []
    for a, b in ((out_lo, np.where(np.isnan(in_lo), out_hi, in_lo)), (np.where(np.isnan(in_hi), np.inf, in_hi), out_hi)):
        lo = np.clip(np.floor(np.nan_to_num(a, nan=np.inf)) - 1, -ml, ml + 1)
        hi = np.clip(np.ceil(np.nan_to_num(b, nan=-np.inf)) + 1, -ml - 1, ml)
        intervals.append((lo.astype(np.int64), hi.astype(np.int64)))
    # the second interval starts where the first ends when the inner sphere is not crossed
    (lo1, hi1), (lo2, hi2) = intervals
    lo2 = np.maximum(lo2, hi1 + 1)
    rows = []
    for lo, hi in ((lo1, hi1), (lo2, hi2)):
        n = np.maximum(hi - lo + 1, 0)
        idx = np.repeat(np.arange(h.size), n)
        l = np.repeat(lo, n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
        rows.append((idx, l))
    idx = np.concatenate([rows[0][0], rows[1][0]])
    l = np.concatenate([rows[0][1], rows[1][1]])
    order = np.lexsort((l, idx))  # (h, k) as in the box, then l ascending
    idx, l = idx[order], l[order]
    return np.stack([h[idx], k[idx], l], axis=1).astype(float)


def excitation_errors(basis: np.ndarray, hkl: np.ndarray, plane: DetectorPlane) -> np.ndarray:
    """Distance (1/Å) of each reciprocal-lattice point from the Ewald sphere."""
    s1 = np.asarray(hkl, float) @ np.linalg.inv(basis).T + plane.s0
    return np.linalg.norm(s1, axis=1) - 1.0 / plane.wavelength
