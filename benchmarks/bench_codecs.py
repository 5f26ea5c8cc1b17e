#!/usr/bin/env python
"""Time every registered codec on a synthetic Poisson frame stack.

Compares one-frame chunks (the default layout) with a single whole-stack chunk and prints
ratio, compression/decompression throughput (MB of the original uint16 data per second,
best of ``--repeats``) and the measured max absolute error. Not a test; see README.md.

Example
-------
    python benchmarks/bench_codecs.py                       # ~30 s
    python benchmarks/bench_codecs.py --frames 64 --bounds 0.5 1 2 4 --json out.json
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from typing import Any, Sequence

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchtools import make_frames  # noqa: E402,F401 - also this module's make_frames (moved there)
from lossbound.codecs import CODECS, CodecSetting, CodecWorker, RoundTrip  # noqa: E402


def build_settings(*, bounds: Sequence[float], codecs: Sequence[str], layouts: Sequence[Any]) -> list[CodecSetting]:
    """Absolute-bound settings for lossy codecs (float32 input where required), defaults for lossless."""
    settings = []
    for layout in layouts:
        for name in codecs:
            spec = CODECS.get(name)
            input_dtype = "float32" if spec.float_only else None
            if not spec.lossy:
                settings.append(CodecSetting(name, chunks=layout))
            elif "absolute" in spec.modes:
                settings.extend(
                    CodecSetting(name, "absolute", b, input_dtype=input_dtype, chunks=layout) for b in bounds
                )
    return settings


def bare_roundtrip(data: np.ndarray, setting: CodecSetting) -> tuple[np.ndarray, float, float]:
    """The codec path by hand, no LossBound code in it: ``input_dtype`` conversion,
    ``h5py`` ``create_dataset`` with the setting's hdf5plugin filter object and chunks into an
    in-memory file, close; reopen and read the whole dataset.

    Returns ``(read back, compress seconds, decompress seconds)``. The filter object is built
    before the clock starts (as :func:`lossbound.codecs.roundtrip` does). A chain's pre-transform
    (the noise quantiser) is not applied: pass the transformed array.
    """
    filt = setting.make_filter()
    chunks = setting.chunk_shape(data.shape)
    t0 = time.perf_counter()
    arr = data if setting.input_dtype is None else data.astype(setting.input_dtype)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as fh:
        fh.create_dataset("data", data=arr, chunks=chunks, **filt)
    t1 = time.perf_counter()
    with h5py.File(buf, "r") as fh:
        out = fh["data"][()]
    return out, t1 - t0, time.perf_counter() - t1


def best_of(worker: CodecWorker, data: np.ndarray, setting: CodecSetting, repeats: int) -> RoundTrip:
    """One untimed warm-up (loads the plugin) then the fastest of ``repeats`` runs."""
    worker.roundtrip(data, setting)
    runs = [worker.roundtrip(data, setting) for _ in range(repeats)]
    best = min(runs, key=lambda rt: rt.compress_s)
    best.decompress_s = min(rt.decompress_s for rt in runs)
    best.decompress_mbps = max(rt.decompress_mbps for rt in runs)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=32, help="number of frames (default 32)")
    parser.add_argument("--shape", type=int, nargs=2, default=(256, 256), metavar=("NY", "NX"))
    parser.add_argument("--background", type=float, default=2.0, help="mean background counts per pixel")
    parser.add_argument("--peaks", type=int, default=40, help="bright spots per frame")
    parser.add_argument("--bounds", type=float, nargs="+", default=[1.0, 4.0], help="absolute error bounds")
    parser.add_argument("--codecs", nargs="+", default=None, help=f"subset of {CODECS.names()}")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting (best is kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--isolate", action="store_true", help="run codecs in a crash-isolated worker")
    parser.add_argument("--json", default=None, help="also write results to this JSON file")
    args = parser.parse_args(argv)

    data = make_frames(
        frames=args.frames, ny=args.shape[0], nx=args.shape[1],
        background=args.background, peaks=args.peaks, seed=args.seed,
    )
    codecs = args.codecs or CODECS.names()
    settings = build_settings(bounds=args.bounds, codecs=codecs, layouts=[None, "all"])
    print(
        f"data: {data.shape} {data.dtype}, {data.nbytes / 1e6:.1f} MB, mean {data.mean():.2f} counts, "
        f"max {data.max()}; best of {args.repeats}; MB/s of original uint16 bytes"
    )
    header = f"{'setting':<34} {'chunks':>12} {'ratio':>7} {'comp MB/s':>10} {'dec MB/s':>9} {'max err':>8} {'bound':>5}"
    print(header)
    print("-" * len(header))
    rows = []
    t_start = time.perf_counter()
    with CodecWorker(isolate=args.isolate) as worker:
        for setting in settings:
            rt = best_of(worker, data, setting, args.repeats)
            name = CodecSetting(setting.codec, setting.mode, setting.value, input_dtype=setting.input_dtype).label
            held = {True: "ok", False: "FAIL", None: "-"}[rt.bound_held]
            print(
                f"{name:<34} {'x'.join(map(str, rt.chunks)):>12} {rt.ratio:7.2f} {rt.compress_mbps:10.1f} "
                f"{rt.decompress_mbps:9.1f} {rt.max_abs_error:8.3g} {held:>5}"
            )
            rows.append({**rt.summary(), **{"metrics": rt.metrics()}})
    print(f"total {time.perf_counter() - t_start:.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
