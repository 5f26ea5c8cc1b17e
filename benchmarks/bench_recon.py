"""Time every available reconstruction backend on one slice and on a stack (after warm-up).

Usage::

    python benchmarks/bench_recon.py [--n-angles 360] [--n-cols 256] [--stack 16] [--repeat 3]

Not a test: prints a table of best-of-``repeat`` wall times of LossBound's
``recon.reconstruct`` and of the library's own call (``bare``), and the error against the
phantom. ``benchmarks/run.py`` (section ``pipelines``) reuses the helpers below.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchtools import best_time  # noqa: E402
from lossbound.pipelines.tomo import recon  # noqa: E402
from lossbound.pipelines.tomo.simulate import simulate_tomo  # noqa: E402


def available_backends() -> list[str]:
    """algotom and scikit-image (pip), tomopy when importable (conda)."""
    return ["algotom", "skimage"] + (["tomopy"] if recon.tomopy_available() else [])


def simulated_sinograms(*, n_angles: int, n_rows: int, n_cols: int) -> dict[str, Any]:
    """The tomography simulation of that size, its ``-log`` sinograms ``(rows, angles, cols)``,
    angles in radians and the true rotation centre."""
    sim = simulate_tomo(n_angles=n_angles, n_rows=n_rows, n_cols=n_cols)
    trans = recon.flat_dark_correct(sim["projections"], sim["flats"], sim["darks"])
    sinos = np.ascontiguousarray(np.moveaxis(recon.minus_log(trans), 1, 0))
    return {"sim": sim, "sinos": sinos, "theta": np.deg2rad(sim["theta"]), "center": float(sim["center"])}


def bare_reconstruct(backend: str, sinos: np.ndarray, theta: np.ndarray, center: float,
                     filter_name: str = "hann") -> np.ndarray:
    """Filtered back-projection of ``sinos`` (rows, angles, cols) by the library's own call,
    without LossBound's wrapper (no grid or scale mapping, no masking):

    - algotom: ``fbp_reconstruction`` on the whole stack in projection order (one ramp
      window for all slices), CPU, ``ncore=1`` and one numba thread — its back-projection races
      with more (see ``lossbound.pipelines.tomo.recon._numba_threads``), as LossBound runs it;
    - scikit-image: ``iradon`` per slice (axis assumed at the middle column);
    - tomopy: ``tomopy.recon`` (gridrec) on the whole stack.
    """
    if backend == "algotom":
        import numba
        from algotom.rec.reconstruction import fbp_reconstruction

        stack = np.ascontiguousarray(np.moveaxis(sinos, 0, 1))  # (angles, rows, cols)
        previous = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            return fbp_reconstruction(stack, center, angles=theta, apply_log=False, gpu=False,
                                      filter_name=filter_name, ncore=1)
        finally:
            numba.set_num_threads(previous)
    if backend == "skimage":
        from skimage.transform import iradon

        deg = np.rad2deg(theta)
        return np.stack([iradon(s.T, theta=deg, output_size=s.shape[1], filter_name=filter_name) for s in sinos])
    if backend == "tomopy":
        import tomopy

        stack = np.ascontiguousarray(np.moveaxis(sinos, 0, 1))
        return tomopy.recon(stack, theta, center=center, algorithm="gridrec", filter_name=filter_name,
                            sinogram_order=False)
    raise ValueError(f"unknown backend {backend!r}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-angles", type=int, default=360)
    parser.add_argument("--n-cols", type=int, default=256)
    parser.add_argument("--stack", type=int, default=16, help="slices in the stack timing")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--filter", default="hann")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    case = simulated_sinograms(n_angles=args.n_angles, n_rows=args.stack, n_cols=args.n_cols)
    t_sim = time.perf_counter() - t0
    sim, sinos, theta, center = case["sim"], case["sinos"], case["theta"], case["center"]
    t0 = time.perf_counter()
    found = recon.find_center(sinos[args.stack // 2], sim["theta"])
    t_center = time.perf_counter() - t0
    print(f"simulate_tomo({args.n_angles} angles x {args.stack} rows x {args.n_cols} cols): {t_sim:.2f} s")
    print(f"find_center: {t_center:.2f} s, found {found:.2f} (true {center:.2f})")

    inside = sim["labels"] > 0
    print(
        f"\n{'backend':<10}{'version':<12}{'warm-up s':>10}{'1 slice s':>11}{f'{args.stack} slices s':>14}"
        f"{'s/slice':>9}{'bare s/slice':>13}{'rms err':>10}"
    )
    for name in available_backends():
        t0 = time.perf_counter()
        recon.reconstruct(sinos[:1], theta, center=center, backend=name, filter_name=args.filter)
        t_warm = time.perf_counter() - t0
        t_one = best_time(
            lambda: recon.reconstruct(sinos[:1], theta, center=center, backend=name, filter_name=args.filter),
            args.repeat,
        )
        out: dict[str, np.ndarray] = {}

        def stack() -> None:
            out["rec"] = recon.reconstruct(sinos, theta, center=center, backend=name, filter_name=args.filter)

        t_stack = best_time(stack, max(1, args.repeat - 1))
        bare_reconstruct(name, sinos[:1], theta, center, args.filter)  # warm-up
        t_bare = best_time(lambda: bare_reconstruct(name, sinos, theta, center, args.filter), max(1, args.repeat - 1))
        rms = float(np.sqrt(np.mean((out["rec"] - sim["phantom"])[inside] ** 2)))
        print(
            f"{name:<10}{recon.backend_version(name):<12}{t_warm:>10.3f}{t_one:>11.3f}{t_stack:>14.3f}"
            f"{t_stack / args.stack:>9.3f}{t_bare / args.stack:>13.3f}{rms:>10.2e}"
        )


if __name__ == "__main__":
    main()
