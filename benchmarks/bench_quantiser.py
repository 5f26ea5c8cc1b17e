#!/usr/bin/env python
"""Single-core throughput of the noise-aware quantiser on a 4 Mpx frame, with the lossless
filter's cost measured apart.

The frame is the simulated CeO2 powder pattern on an Eiger 4M (2167 x 2070 uint32, 4.5 Mpx;
module gaps and the hot pixel set to 0 so the count range is the detector's real one). Prints MB/s of the detector data (median of
``--repeats``) for: the transform alone, each lossless filter alone (on the quantised frame,
in-memory HDF5 write), and the chain (transform + filter), plus the ratios.

Example
-------
    python benchmarks/bench_quantiser.py                # ~20 s
    python benchmarks/bench_quantiser.py --fractions 0.5 1 2 --json /tmp/quant.json
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys

os.environ.setdefault("BLOSC_NTHREADS", "1")  # single core: what one acquisition core does
os.environ.setdefault("OMP_NUM_THREADS", "1")

import h5py  # noqa: E402
import hdf5plugin  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchtools import median_time as timed  # noqa: E402
from lossbound.codecs.quantiser import quantise_counts  # noqa: E402

FILTERS = {
    "bitshuffle_lz4": lambda: hdf5plugin.Bitshuffle(cname="lz4"),
    "zstd": lambda: hdf5plugin.Zstd(),
    "blosc2": lambda: hdf5plugin.Blosc2(cname="zstd", clevel=5, filters=hdf5plugin.Blosc2.BITSHUFFLE),
}


def frame_4mpx() -> np.ndarray:
    from lossbound.pipelines.azint.simulate import simulate_powder

    (frame,), _ = simulate_powder(detector="Eiger4M", poni_px=[1100.0, 1000.0], distance_mm=150.0,
                                  bad_pixels=0, zingers=0)
    return np.where((frame < 0) | (frame > 1_000_000), 0, frame).astype(np.uint32)


def write(data: np.ndarray, filt) -> int:
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        ds = f.create_dataset("d", data=data, chunks=data.shape, **filt)
        f.flush()
        return int(ds.id.get_storage_size())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    data = frame_4mpx()
    mb = data.nbytes / 1e6
    print(f"frame {data.shape} {data.dtype} ({mb:.1f} MB), machine {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, single thread")
    rows = []
    print("| f | transform MB/s | filter | filter MB/s | chain MB/s | ratio | lossless ratio |")
    print("|---|---|---|---|---|---|---|")
    for f in args.fractions:
        quantise_counts(data, f)  # warm the table
        t_q = timed(lambda: quantise_counts(data, f), args.repeats)
        q = quantise_counts(data, f)
        for name, make in FILTERS.items():
            t_f = timed(lambda: write(q, make()), args.repeats)
            ratio = data.nbytes / write(q, make())
            lossless = data.nbytes / write(data, make())
            row = {"fraction": f, "filter": name, "transform_mbps": mb / t_q, "filter_mbps": mb / t_f,
                   "chain_mbps": mb / (t_q + t_f), "ratio": ratio, "lossless_ratio": lossless}
            rows.append(row)
            print(f"| {f:g} | {row['transform_mbps']:.0f} | {name} | {row['filter_mbps']:.0f} | "
                  f"{row['chain_mbps']:.0f} | {ratio:.2f} | {lossless:.2f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": platform.platform(), "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
