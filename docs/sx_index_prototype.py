# Research prototype for issue 8 (not project code, not imported or tested): pip-only cctbx indexing of thaumatin stills.
#!/usr/bin/env python
"""Prototype: index serial-crystallography stills with a known cell using cctbx (pip: cctbx-base).

Usage: OMP_NUM_THREADS=1 venv/bin/python index_proto.py [--cell a b c al be ga] frame1.cbf.bz2 ...

Pipeline per frame:
  fabio read -> mask (<0, > Count_cutoff) -> simple spot finder (local mean/var, 3x3 box sum
  above background + k sigma, scipy.ndimage.label, weighted centroids) -> reciprocal-space
  vectors (flat detector normal to beam) -> rstbx DPS 1D-FFT basis search -> pick DPS direct
  vectors matching the known cell lengths/angle, build 3rd axis from the cell metric ->
  least-squares refinement of orientation + cell on pixel residuals (scipy).
"""
# --- IMPORT ORDER MATTERS (cctbx-base 2025.11 wheel, scipy 1.17, numpy 2.4):
# 1. boost_adaptbx.boost.python FIRST: the wheel bundles its own libstdc++; importing scipy,
#    fabio, pyFAI or matplotlib before it segfaults.
# 2. scipy.linalg / scipy.optimize BEFORE scitbx/cctbx/rstbx extension modules: those are loaded
#    with RTLD_GLOBAL and afterwards a fresh scipy.linalg import breaks LAPACK workspace queries
#    (scipy.linalg.svd -> "ValueError: Too large work array required", hit via least_squares).
# 3. then scitbx / rstbx.
import os
os.environ.setdefault("OMP_NUM_THREADS", "1")
import boost_adaptbx.boost.python  # noqa: F401  (must be first)
import numpy as np
import scipy.linalg  # noqa: F401  (before scitbx/rstbx)
from scipy import ndimage
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation
import fabio
from scitbx.array_family import flex
from rstbx.indexing_api.lattice import DPS_primitive_lattice

import re
import sys
import time
import argparse


# ------------------------------------------------------------------ geometry
class Geometry:
    """Flat detector normal to the beam. Lab frame (DIALS-like): beam travels along -z,
    s0 = (0, 0, -1/wl); detector at z = -distance; fast axis +x, slow axis -y.
    Pixel (i_slow, j_fast) has its centre at corner-based coordinate (j + 0.5, i + 0.5)."""

    def __init__(self, wavelength, distance_mm, beam_x_px, beam_y_px, pixel_mm):
        self.wl = wavelength
        self.D = distance_mm
        self.bx = beam_x_px
        self.by = beam_y_px
        self.pix = pixel_mm
        self.s0 = np.array([0.0, 0.0, -1.0 / wavelength])

    def px_to_lab(self, x, y):  # x = fast, y = slow, corner-based px
        return np.stack([(x - self.bx) * self.pix, -(y - self.by) * self.pix,
                         np.full_like(x, -self.D)], axis=-1)

    def px_to_rlp(self, x, y):
        lab = self.px_to_lab(x, y)
        s1 = lab / np.linalg.norm(lab, axis=1)[:, None] / self.wl
        return s1 - self.s0

    def rlp_to_px(self, r):
        """Still prediction: direction of s1 = s0 + r (r not exactly on Ewald sphere)."""
        s1 = r + self.s0
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -self.D / s1[:, 2]
            x = s1[:, 0] * t / self.pix + self.bx
            y = -s1[:, 1] * t / self.pix + self.by
        bad = s1[:, 2] >= 0
        x[bad] = np.nan
        y[bad] = np.nan
        return x, y


def read_frame(path):
    img = fabio.open(path)
    hdr = img.header.get("_array_data.header_contents", "")

    def hv(pat, conv=float, default=None):
        m = re.search(pat, hdr)
        return conv(m.group(1)) if m else default

    wl = hv(r"Wavelength\s+([\d.]+)")
    dist = hv(r"Detector_distance\s+([\d.]+)") * 1000.0
    m = re.search(r"Beam_xy\s+\(([\d.]+),\s*([\d.]+)\)", hdr)
    bx, by = float(m.group(1)), float(m.group(2))
    pix = hv(r"Pixel_size\s+([\de.-]+)") * 1000.0
    cutoff = hv(r"Count_cutoff\s+(\d+)", int, 2 ** 20)
    data = img.data
    mask = (data >= 0) & (data <= cutoff)
    return data.astype(np.float32), mask, Geometry(wl, dist, bx, by, pix)


# ------------------------------------------------------------------ spot finding
def find_spots(data, mask, k_sigma=6.0, bg_size=15, min_px=2, max_px=200, edge=5):
    m = mask.astype(np.float32)
    d = np.where(mask, data, 0.0).astype(np.float32)
    # local background mean from a bg_size box of valid pixels (uniform filter is separable/fast)
    n = ndimage.uniform_filter(m, bg_size, mode="constant")
    s = ndimage.uniform_filter(d, bg_size, mode="constant")
    bg = np.where(n > 0.3, s / np.maximum(n, 1e-6), 0.0)
    # 3x3 box sums of signal and of valid pixels
    n3 = ndimage.uniform_filter(m, 3, mode="constant") * 9.0
    s3 = ndimage.uniform_filter(d, 3, mode="constant") * 9.0
    excess = s3 - n3 * bg
    sig = np.sqrt(n3 * bg + 1.0)  # Poisson
    hot = (excess > k_sigma * sig) & (n3 > 8.5) & mask & (d > bg + 2.0 * np.sqrt(bg + 1.0))
    # mask invalid-adjacent pixels (module edges) so partial boxes do not fire
    hot &= ndimage.binary_erosion(mask, iterations=1)
    lab, nlab = ndimage.label(hot)
    if nlab == 0:
        return np.zeros((0, 2)), np.zeros(0)
    idx = np.arange(1, nlab + 1)
    npx = ndimage.sum(np.ones_like(d), lab, idx)
    w = np.clip(d - bg, 0, None)
    tot = ndimage.sum(w, lab, idx)
    cy = ndimage.sum(w * np.arange(d.shape[0])[:, None], lab, idx) / np.maximum(tot, 1e-9)
    cx = ndimage.sum(w * np.arange(d.shape[1])[None, :], lab, idx) / np.maximum(tot, 1e-9)
    ok = (npx >= min_px) & (npx <= max_px) & (tot > 0)
    ok &= (cx > edge) & (cx < d.shape[1] - edge) & (cy > edge) & (cy < d.shape[0] - edge)
    # +0.5: pixel centres in the corner-based convention of the header beam centre
    xy = np.stack([cx[ok] + 0.5, cy[ok] + 0.5], axis=1)
    return xy, tot[ok]


# ------------------------------------------------------------------ cell helpers
def direct_matrix(cell):
    """Rows = a, b, c direct vectors in a standard (PDB/cctbx) orthogonalisation."""
    a, b, c, al, be, ga = cell
    al, be, ga = np.radians([al, be, ga])
    ax = np.array([a, 0, 0])
    bx = np.array([b * np.cos(ga), b * np.sin(ga), 0])
    cx_ = c * np.cos(be)
    cy_ = c * (np.cos(al) - np.cos(be) * np.cos(ga)) / np.sin(ga)
    cz_ = np.sqrt(c * c - cx_ ** 2 - cy_ ** 2)
    return np.array([ax, bx, [cx_, cy_, cz_]])


def metric(cell):
    A = direct_matrix(cell)
    return A @ A.T


def third_axis(u, v, G, i, j, k):
    """Given direct vectors u (axis i) and v (axis j), return the two candidate vectors w for
    axis k with w.u = G[i,k], w.v = G[j,k], |w|^2 = G[k,k]."""
    M = np.array([u, v])
    rhs = np.array([G[i, k], G[j, k]])
    p = np.linalg.lstsq(M, rhs, rcond=None)[0]  # minimum-norm in span(u, v)
    nvec = np.cross(u, v)
    nvec /= np.linalg.norm(nvec)
    h2 = G[k, k] - p @ p
    if h2 <= 0:
        return []
    h = np.sqrt(h2)
    return [p + h * nvec, p - h * nvec]


def candidate_bases(dvecs, cell, len_tol=0.06, ang_tol_deg=4.0,
                    scales=(0.97, 0.98, 0.99, 1.0, 1.01, 1.02, 1.03)):
    """Return 3x3 direct matrices (rows a, b, c) built from pairs of DPS vectors matching the
    known cell lengths and inter-axial angle; third axis from the cell metric, with its length
    scanned over `scales` (the nominal cell may be ~2 % off; building the missing axis with the
    nominal length can trap the refinement in a wrong-index minimum)."""
    dvecs = np.asarray(dvecs, dtype=float).reshape(-1, 3)  # DPS may return 0 solutions
    G = metric(cell)
    L = np.sqrt(np.diag(G))
    lens = np.linalg.norm(dvecs, axis=1)
    out = []
    for (i, j, k) in [(0, 1, 2), (0, 2, 1), (1, 2, 0)]:
        cos_ij = G[i, j] / (L[i] * L[j])
        mi = np.where(np.abs(lens / L[i] - 1) < len_tol)[0]
        mj = np.where(np.abs(lens / L[j] - 1) < len_tol)[0]
        for p in mi:
            for q in mj:
                if p == q:
                    continue
                cos_pq = dvecs[p] @ dvecs[q] / (lens[p] * lens[q])
                for sgn in (1, -1):  # -v is as good as v
                    if abs(np.degrees(np.arccos(np.clip(sgn * cos_pq, -1, 1)) - np.arccos(cos_ij))) < ang_tol_deg:
                        u, v = dvecs[p], sgn * dvecs[q]
                        for w in third_axis(u, v, G, i, j, k):
                            for sc in scales:
                                A = np.zeros((3, 3))
                                A[i], A[j], A[k] = u, v, w * sc
                                out.append(A)
    return out


# ------------------------------------------------------------------ scoring / refinement
def predict(A, obs_xy, rlp, geom):
    """hkl by rounding A.r; predicted pixel positions of the nearest lattice points."""
    frac = rlp @ A.T
    hkl = np.round(frac)
    B = np.linalg.inv(A)  # columns = reciprocal basis vectors a*, b*, c*
    rpred = hkl @ B.T
    px, py = geom.rlp_to_px(rpred)
    d = np.hypot(px - obs_xy[:, 0], py - obs_xy[:, 1])
    d[np.isnan(d) | np.all(hkl == 0, axis=1)] = np.inf
    return hkl, d


def score(A, obs_xy, rlp, geom, tol_px=3.0):
    _, d = predict(A, obs_xy, rlp, geom)
    return np.mean(d < tol_px)


def build_A(params, cell_fn, U0):
    rv = params[:3]
    cell = cell_fn(params[3:])
    R = Rotation.from_rotvec(rv).as_matrix()
    return (R @ U0 @ direct_matrix(cell).T).T  # rows rotated


def refine(A0, obs_xy, rlp, geom, system="tetragonal", tols=(8.0, 5.0, 3.0)):
    """LSQ refinement of orientation (3 rot.-vector params) + cell on pixel residuals of the
    spots indexed within the current tolerance. hkl fixed per round."""
    # decompose A0 (rows a,b,c) into U0 * B(cell) with B from direct_matrix (A0^T = U0 B^T)
    if np.linalg.det(A0) < 0:  # -A0: same metric/lattice, right-handed
        A0 = -A0
    G = A0 @ A0.T
    L = np.sqrt(np.diag(G))
    ang = np.degrees(np.arccos([G[1, 2] / (L[1] * L[2]), G[0, 2] / (L[0] * L[2]), G[0, 1] / (L[0] * L[1])]))
    cell0 = np.concatenate([L, ang])
    if system == "tetragonal":
        p_cell = np.array([(L[0] + L[1]) / 2, L[2]])
        cell_fn = lambda p: (p[0], p[0], p[1], 90.0, 90.0, 90.0)
    else:  # triclinic
        p_cell = cell0.copy()
        cell_fn = lambda p: tuple(p)
    Bt = direct_matrix(cell_fn(p_cell)).T
    # nearest rotation U0 with A0^T ~ U0 Bt
    M = A0.T @ np.linalg.inv(Bt)
    Uu, _, Vt = np.linalg.svd(M)
    U0 = Uu @ Vt
    params = np.concatenate([np.zeros(3), p_cell])
    for tol in tols:
        A = build_A(params, cell_fn, U0)
        hkl, d = predict(A, obs_xy, rlp, geom)
        sel = d < tol
        if sel.sum() < 6:
            break
        H = hkl[sel]
        xo = obs_xy[sel]

        def resid(p):
            Ap = build_A(p, cell_fn, U0)
            r = H @ np.linalg.inv(Ap).T
            px, py = geom.rlp_to_px(r)
            out = np.concatenate([px - xo[:, 0], py - xo[:, 1]])
            return np.nan_to_num(out, nan=50.0, posinf=50.0, neginf=-50.0)

        res = least_squares(resid, params, loss="soft_l1", f_scale=2.0, x_scale="jac")
        params = res.x
    A = build_A(params, cell_fn, U0)
    return A, cell_fn(params[3:])


def index_frame(path, cell, max_cell=None, verbose=True, k_sigma=6.0):
    t0 = time.time()
    data, mask, geom = read_frame(path)
    t_read = time.time() - t0
    xy, inten = find_spots(data, mask, k_sigma=k_sigma)
    t_spot = time.time() - t0 - t_read
    res = dict(frame=os.path.basename(path), n_spots=len(xy), frac=0.0, rmsd=np.nan,
               cell=None, t_read=t_read, t_spot=t_spot)
    if len(xy) <= 7:  # DPS index() asserts len > 7
        res["time"] = time.time() - t0
        return res
    rlp = geom.px_to_rlp(xy[:, 0], xy[:, 1])
    # ---- rstbx DPS 1D-FFT basis search
    if max_cell is None:
        # 2x the longest axis: with 1.5x the c axis (~152 A) was sometimes missing from the
        # DPS solutions (frames 2, 6), leaving only (a, b) pairs.
        max_cell = 2.0 * max(cell[:3])
    dps = DPS_primitive_lattice(max_cell=max_cell, recommended_grid_sampling_rad=None,
                                horizon_phil=None)
    dps.index(reciprocal_space_vectors=flex.vec3_double(rlp.tolist()))
    sols = dps.getSolutions()
    dvecs = np.array([s.bvec() for s in sols])  # bvec() = dvec (unit) * real (length, A)
    t_dps = time.time() - t0 - t_read - t_spot
    # ---- known-cell basis selection
    cands = candidate_bases(dvecs, cell)
    best, best_s = None, -1
    for A in cands:
        s = score(A, xy, rlp, geom, tol_px=6.0)
        if s > best_s:
            best, best_s = A, s
    res.update(n_dps=len(dvecs), n_cand=len(cands), t_dps=t_dps)
    if best is None:
        res["time"] = time.time() - t0
        return res
    # refine the top few candidates, keep the best after refinement
    scored = sorted(cands, key=lambda A: -score(A, xy, rlp, geom, tol_px=6.0))[:3]
    best_final = None
    for A0 in scored:
        A, rcell = refine(A0, xy, rlp, geom)
        _, d = predict(A, xy, rlp, geom)
        frac = np.mean(d < 3.0)
        if best_final is None or frac > best_final[0]:
            rmsd = np.sqrt(np.mean(d[d < 3.0] ** 2)) if np.any(d < 3.0) else np.nan
            best_final = (frac, rmsd, rcell, A)
    frac, rmsd, rcell, A = best_final
    res.update(frac=frac, rmsd=rmsd, cell=rcell, frac_unrefined=score(scored[0], xy, rlp, geom, 3.0))
    res["time"] = time.time() - t0
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("frames", nargs="+")
    ap.add_argument("--cell", nargs=6, type=float, default=[58.0, 58.0, 150.0, 90, 90, 90])
    ap.add_argument("--k-sigma", type=float, default=6.0)
    a = ap.parse_args()
    print("%-22s %6s %5s %5s %6s %6s %5s %7s %7s %5s %5s %5s %5s" % (
        "frame", "spots", "ndps", "ncand", "idx0%", "idx%", "rmsd", "a", "c",
        "t", "read", "spot", "dps"))
    for f in a.frames:
        r = index_frame(f, tuple(a.cell), k_sigma=a.k_sigma)
        c = r["cell"]
        print("%-22s %6d %5s %5s %6.1f %6.1f %5.2f %7s %7s %5.2f %5.2f %5.2f %5.2f" % (
            r["frame"], r["n_spots"], r.get("n_dps", "-"), r.get("n_cand", "-"),
            100 * r.get("frac_unrefined", 0), 100 * r["frac"], r["rmsd"],
            "%.2f" % c[0] if c else "-", "%.2f" % c[2] if c else "-", r["time"],
            r["t_read"], r["t_spot"], r.get("t_dps", np.nan)))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
