"""Time every available reconstruction backend on one slice and on a stack (after warm-up).

Usage::

    python benchmarks/bench_recon.py [--n-angles 360] [--n-cols 256] [--stack 16] [--repeat 3]

Not a test: prints a table of best-of-``repeat`` wall times and the error against the phantom.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.tomo.simulate import simulate_tomo  # noqa: E402
from pipelines.tomo import recon  # noqa: E402


def _best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-angles", type=int, default=360)
    parser.add_argument("--n-cols", type=int, default=256)
    parser.add_argument("--stack", type=int, default=16, help="slices in the stack timing")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--filter", default="hann")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    sim = simulate_tomo(n_angles=args.n_angles, n_rows=args.stack, n_cols=args.n_cols)
    t_sim = time.perf_counter() - t0
    trans = recon.flat_dark_correct(sim["projections"], sim["flats"], sim["darks"])
    sinos = np.ascontiguousarray(np.moveaxis(recon.minus_log(trans), 1, 0))
    theta = np.deg2rad(sim["theta"])
    center = float(sim["center"])
    t0 = time.perf_counter()
    found = recon.find_center(sinos[args.stack // 2], sim["theta"])
    t_center = time.perf_counter() - t0
    print(f"simulate_tomo({args.n_angles} angles x {args.stack} rows x {args.n_cols} cols): {t_sim:.2f} s")
    print(f"find_center: {t_center:.2f} s, found {found:.2f} (true {center:.2f})")

    backends = ["algotom", "skimage"] + (["tomopy"] if recon.tomopy_available() else [])
    inside = sim["labels"] > 0
    print(
        f"\n{'backend':<10}{'version':<12}{'warm-up s':>10}{'1 slice s':>11}{f'{args.stack} slices s':>14}{'s/slice':>9}{'rms err':>10}"
    )
    for name in backends:
        t0 = time.perf_counter()
        recon.reconstruct(sinos[:1], theta, center=center, backend=name, filter_name=args.filter)
        t_warm = time.perf_counter() - t0
        t_one = _best_time(
            lambda: recon.reconstruct(sinos[:1], theta, center=center, backend=name, filter_name=args.filter),
            args.repeat,
        )
        out: dict[str, np.ndarray] = {}

        def stack() -> None:
            out["rec"] = recon.reconstruct(sinos, theta, center=center, backend=name, filter_name=args.filter)

        t_stack = _best_time(stack, max(1, args.repeat - 1))
        rms = float(np.sqrt(np.mean((out["rec"] - sim["phantom"])[inside] ** 2)))
        print(
            f"{name:<10}{recon.backend_version(name):<12}{t_warm:>10.3f}{t_one:>11.3f}{t_stack:>14.3f}"
            f"{t_stack / args.stack:>9.3f}{rms:>10.2e}"
        )


if __name__ == "__main__":
    main()
