#!/usr/bin/env python
"""LossBound's benchmark suite: our paths side by side with the bare libraries, in one run.

    python benchmarks/run.py                         # every section but e2e (full sizes; see README.md)
    python benchmarks/run.py --smoke                 # tiny sizes: checks the suite runs (a test does this)
    python benchmarks/run.py --only codec pipelines  # some sections
    python benchmarks/run.py --e2e                   # also e2e: python -m evaluate per technique (long)
    python benchmarks/run.py --json out.json         # default: runs/benchmarks/<timestamp>.json

Sections (medians over repeats; the machine is named at the top and in the JSON):

overhead     wall time of the default tomography study vs its own work (target <= 10 %)
codec        lossbound.codecs.roundtrip vs a bare h5py write + read with the same filter (target within 10 %)
pipelines    pyFAI integrate1d bare vs the azint pipeline; FBP slices/s bare vs the tomo pipeline per
             backend; sx spot finding, indexing and whole-pipeline frames/s
search       bisection vs a sqrt(2) grid: evaluations, wall time, same answer
scaling      cost of one point against 1x, 2x, 4x the projections; 1 vs 2 workers
feasibility  single-core compress throughput per thresholds-file setting, cores for 16 GB/s
acquisition  one quiet core: the quantiser and sparsification transforms (targets 2 GB/s, 300 MB/s), every codec
             chain compress + decompress MB/s and cores for 16 GB/s, the bare lossless filters, pyFAI's CPU sparsify
e2e          python -m evaluate technique=<t> per technique and the whole set (target <= 15 min)
campaign     lossbound campaign run of 10, 20, 40 tiny datasets into a tracking server: points/s, tracking
             time per point, thresholds merge and report time as the campaign grows (--only campaign)

Prints one Markdown table per section with its targets line, and saves everything as JSON.
Not a test: timings depend on the machine and its load (``--smoke`` sizes are not meaningful).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import functools
import glob
import io
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lossbound.core.paths import runs_dir  # noqa: E402
from benchtools import (  # noqa: E402
    ROOT, TINY_TOMO, Section, Target, compose, machine_info, machine_table, make_frames, median_time,
    paired_medians, plain, resolved, seconds, single_thread,
)

# The sx simulation of the fast tests (tests/test_sx.py SMALL): 3 stills on a Pilatus 300k.
SX_SMALL = ["dataset.simulation.n_frames=3", "dataset.simulation.misses=[1]",
            "+dataset.simulation.detector=Pilatus300k", "+dataset.simulation.beam_px=[240.0,300.0]",
            "+dataset.simulation.distance_mm=120.0"]
E2E_TARGET_S = 15 * 60
PEAK_GBPS = 16.0


@dataclasses.dataclass
class Run:
    """What every section needs: sizes (``smoke``), repeats and a scratch folder."""

    smoke: bool
    tmp: Path
    thresholds: list[str] | None = None

    @property
    def repeats(self) -> int:
        """Timed repeats of fast measurements (a median is taken)."""
        return 2 if self.smoke else 5

    @property
    def repeats_slow(self) -> int:
        """Timed repeats of measurements that take seconds each."""
        return 1 if self.smoke else 3

    @property
    def cache(self) -> Path | None:
        """Raw-result cache of the studies: the project's runs/cache (shared, as in real use)
        in full runs, a scratch one in smoke runs (they never touch runs/)."""
        return self.tmp / "cache" if self.smoke else None

    def tiny(self) -> list[str]:
        """Smoke runs: the tiny tomography simulation, written under the scratch folder."""
        return [*TINY_TOMO, f"paths.reference_data={self.tmp / 'reference_data'}"] if self.smoke else []


# -- 1. overhead -----------------------------------------------------------------------------------
def section_overhead(run: Run) -> Section:
    import study_engine

    extra = run.tiny() + (["codec=[sz3]", "search=grid", "sweep.bounds=[4,64]", "sweep.baselines=[blosc2]"]
                          if run.smoke else [])
    row = study_engine.measure_overhead(run.tmp / "overhead", extra, cache_dir=run.cache)
    sec = Section("overhead", "framework overhead of the default tomography study",
                  [("study", "study"), ("points", "points"), ("wall_s", "wall s"), ("work_s", "own work s"),
                   ("framework_s", "framework s"), ("overhead_pct", "overhead %")], [row])
    sec.targets.append(Target("framework overhead <= 10 % of the study's wall time", row["overhead_pct"] <= 10.0,
                              f"{row['overhead_pct']:.1f} %"))
    sec.notes += ["wall = Study.run() from start to end, one worker, fresh journal, store and raw result already "
                  "there (a first study primes them); own work = StudyResult.work_seconds: reading the dataset, "
                  "raw result, evaluator references, noise reference where computed, and per point the codec "
                  "round trip, pipeline and evaluators; framework = the rest (MLflow, journal, thresholds, "
                  "report, figures, codec worker start and warm-up)."]
    return sec


# -- 2. codec ---------------------------------------------------------------------------------------
def codec_settings() -> list[Any]:
    """The issue's codec settings (``CodecSetting`` each): three error-bounded lossy codecs at 4 counts (ZFP
    and SPERR on float32), the three lossless filters, the noise quantiser at one sigma + Blosc2."""
    from lossbound.codecs import CodecSetting

    return [CodecSetting("sz3", "absolute", 4), CodecSetting("zfp", "absolute", 4, input_dtype="float32"),
            CodecSetting("sperr", "absolute", 4, input_dtype="float32"), CodecSetting("blosc2"),
            CodecSetting("bitshuffle_lz4"), CodecSetting("zstd"), CodecSetting("quant_blosc2", "step_sigma", 1)]


def section_codec(run: Run) -> Section:
    import bench_codecs
    from lossbound.codecs import TRANSFORMS, roundtrip

    n, ny, nx = (4, 128, 128) if run.smoke else (16, 1024, 1024)
    data = make_frames(frames=n, ny=ny, nx=nx, background=2.0, peaks=40, seed=0)
    mb = data.nbytes / 1e6
    sec = Section("codec", f"our round trip vs bare h5py + hdf5plugin ({n} x {ny} x {nx} {data.dtype} Poisson "
                           f"stack, {mb:.1f} MB, one frame per chunk, in-memory files)",
                  [("setting", "setting"), ("ours_s", "ours s"), ("bare_s", "bare s"), ("transform_s", "transform s"),
                   ("ratio", "ours/bare"), ("ours_mbps", "ours MB/s"), ("bare_mbps", "bare MB/s"),
                   ("ours_call_s", "whole roundtrip() s"), ("same_output", "same data read back")])
    for setting in codec_settings():
        spec = setting.spec
        # the quantiser's transform is applied by hand outside the bare timing, timed apart and added
        source = data if spec.transform is None else TRANSFORMS.get(spec.transform)(data, **setting.transform_params())
        ours: dict[str, list[float]] = {"io": [], "call": []}
        bare: list[float] = []

        def ours_once() -> np.ndarray:
            rt, wall = seconds(lambda: roundtrip(data, setting))
            ours["io"].append(rt.compress_s + rt.decompress_s)
            ours["call"].append(wall)
            return rt.decompressed

        def bare_once() -> np.ndarray:
            out, c, d = bench_codecs.bare_roundtrip(source, setting)
            bare.append(c + d)
            return out

        same = bool(np.array_equal(ours_once(), bare_once()))  # warm-up: loads the plugin, checks same work
        for times in (ours["io"], ours["call"], bare):
            times.clear()
        for r in range(run.repeats):  # interleaved, alternating which goes first
            for fn in ((ours_once, bare_once) if r % 2 == 0 else (bare_once, ours_once)):
                fn()
        transform_s = (median_time(lambda: TRANSFORMS.get(spec.transform)(data, **setting.transform_params()),
                                   run.repeats) if spec.transform else 0.0)
        o, b = float(np.median(ours["io"])), float(np.median(bare)) + transform_s
        sec.rows.append({"setting": setting.label, "codec": setting.codec, "ours_s": o, "bare_s": b,
                         "transform_s": transform_s if spec.transform else None, "ratio": o / b,
                         "ours_mbps": mb / o, "bare_mbps": mb / b, "ours_call_s": float(np.median(ours["call"])),
                         "same_output": same})
    slow = [r["setting"] for r in sec.rows if r["ratio"] > 1.10]
    worst = max(sec.rows, key=lambda r: r["ratio"])
    sec.targets.append(Target("our codec path within 10 % of the bare h5py path (ours/bare <= 1.10) for every codec",
                              not slow, f"worst {worst['setting']} {worst['ratio']:.3f}"
                              + (f"; over: {', '.join(slow)}" if slow else "")))
    sec.notes += [
        f"median of {run.repeats} interleaved repeats after one warm-up per codec; MB/s of the original "
        f"{data.dtype} bytes. ours = RoundTrip.compress_s + decompress_s of lossbound.codecs.roundtrip (write_payload: "
        "dtype conversion, transform, create_dataset, chain attribute, close; reopen, read_payload); bare = "
        "input_dtype conversion + h5py create_dataset(**setting.make_filter(), chunks=setting.chunk_shape) + "
        "close; reopen, read the whole dataset.",
        "quant_blosc2: the bare path writes the array quantised beforehand with the same transform "
        "(lossbound.codecs.TRANSFORMS) outside its timing; the transform's median time is measured apart and added "
        "to bare s (column 'transform s'), so both sides do the same work.",
        "'whole roundtrip() s' is the wall time of the whole call, which also validates the setting and "
        "checks the bound against the original (max error over every pixel): not part of the codec path.",
    ]
    return sec


# -- 3. pipelines ------------------------------------------------------------------------------------
def _azint_rows(run: Run) -> list[dict[str, Any]]:
    """pyFAI integrate1d with the integrator built once vs the azint pipeline's run on the same frame."""
    from lossbound.core.types import Dataset
    from lossbound.pipelines.azint.simulate import COUNT_CUTOFF, geometry, simulate_powder, simulation_params
    from lossbound.pipelines.azint.technique import AzintTechnique
    from lossbound.pipelines.frames import sentinel_mask

    cfg = resolved(compose(["technique=azint"]), "technique")["pipeline"]
    tech = AzintTechnique(cfg)
    cases = ([("Pilatus100k", {"poni_px": [100.0, 240.0], "distance_mm": 100.0}),
              ("Pilatus300k", {"poni_px": [300.0, 240.0], "distance_mm": 100.0})] if run.smoke else
             [("Pilatus1M", {}), ("Eiger4M", {"poni_px": [1100.0, 1000.0], "distance_mm": 150.0})])
    method = cfg["method"] if isinstance(cfg["method"], str) else tuple(cfg["method"])
    rows = []
    for detector, over in cases:
        frames, ai_sim = simulate_powder(detector=detector, **over)
        masked = sentinel_mask(frames, count_cutoff=COUNT_CUTOFF)
        bare_ai = geometry(simulation_params(detector=detector, **over))  # its own integrator, from the geometry
        kwargs = dict(unit=cfg["unit"], method=method, mask=masked.astype(np.int8), error_model=cfg["error_model"],
                      polarization_factor=cfg["polarization_factor"], correctSolidAngle=cfg["correct_solid_angle"])
        data = Dataset(name=detector, arrays={"frames": frames[:1], "geometry": np.zeros(1)}, payload="frames",
                       source="simulated", meta={"geometry": ai_sim.get_config()}, mask=~masked)
        t = paired_medians({"bare": lambda: bare_ai.integrate1d(frames[0], cfg["npt"], **kwargs),
                            "ours": lambda: tech.run(data, {})}, run.repeats)
        mpx = frames[0].size / 1e6
        rows.append({"part": "azint", "case": f"integrate1d {'/'.join(method)}, {detector} {mpx:.2f} Mpx frame, "
                                              f"{cfg['npt']} bins", "unit": "ms/frame",
                     "bare": 1e3 * t["bare"], "ours": 1e3 * t["ours"], "ratio": t["ours"] / t["bare"]})
    return rows


def _recon_rows(run: Run) -> list[dict[str, Any]]:
    """FBP slices/s: the library's own call vs LossBound's wrapper and the tomo pipeline's run."""
    import bench_recon
    from lossbound.core.types import Dataset
    from lossbound.pipelines.tomo import recon
    from lossbound.pipelines.tomo.technique import TomoTechnique

    n_angles, n_rows, n_cols = (60, 2, 64) if run.smoke else (360, 16, 256)
    case = bench_recon.simulated_sinograms(n_angles=n_angles, n_rows=n_rows, n_cols=n_cols)
    sim, sinos, theta = case["sim"], case["sinos"], case["theta"]
    data = Dataset(name="sim", arrays={k: sim[k] for k in ("projections", "flats", "darks", "theta")},
                   payload="projections", source="simulated", meta={"adu_per_photon": 1.0})
    cfg = resolved(compose(["technique=tomo"]), "technique")["pipeline"]
    rows = []
    for backend in bench_recon.available_backends():
        like = TomoTechnique({**cfg, "backend": backend, "max_rows": None, "halves": False})
        default = TomoTechnique({**cfg, "backend": backend, "max_rows": None})
        prepared = like.prepare(data)  # centre and defects, found once on the raw data
        c = float(prepared["center"])
        t = paired_medians({
            "bare": lambda: bench_recon.bare_reconstruct(backend, sinos, theta, c),
            "wrapper": lambda: recon.reconstruct(sinos, theta, center=c, backend=backend,
                                                 filter_name=cfg["filter_name"]),
            "pipeline": lambda: like.run(data, prepared),
            "default": lambda: default.run(data, prepared),
        }, run.repeats)
        label = f"{backend} {recon.backend_version(backend)}, {n_rows} slices of {n_angles} x {n_cols}"
        for key, what in (("wrapper", "recon.reconstruct (wrapper)"),
                          ("pipeline", "pipeline run, halves off (flat/dark, zingers, defects, -log, FBP)"),
                          ("default", "pipeline run, default (halves on: 3 FBPs per slice)")):
            rows.append({"part": "recon", "case": f"{label}: {what}", "unit": "slices/s", "backend": backend,
                         "bare": n_rows / t["bare"], "ours": n_rows / t[key], "ratio": t[key] / t["bare"]})
    return rows


def _sx_rows(run: Run) -> list[dict[str, Any]]:
    """Spot finding, indexing and the whole sx pipeline in frames/s on the built-in simulation."""
    from lossbound.pipelines.sx import indexing
    from lossbound.pipelines.sx import spots as sp
    from lossbound.pipelines.sx.technique import SxTechnique

    over = ["technique=sx", *([f"paths.reference_data={run.tmp / 'reference_data'}", *SX_SMALL] if run.smoke else [])]
    cfg = compose(over)
    tcfg = resolved(cfg, "technique")["pipeline"]
    tech = SxTechnique(tcfg)
    data = tech.load(resolved(cfg, "dataset"))
    frames = data.payload_array
    masked = ~data.mask if data.mask is not None else np.zeros(frames.shape[1:], bool)
    ai = tech.integrator(data)

    def spots_all() -> list[dict[str, np.ndarray]]:
        out = []
        for frame in frames:
            bg, sigma = sp.background_model(ai, frame, masked, npt=tcfg["npt"], unit=tcfg["unit"],
                                            thres=float(tcfg["clip_sigma"]), max_iter=tcfg["clip_iterations"])
            out.append(sp.find_spots(frame, bg, sigma, masked, k=float(tcfg["k_sigma"]), min_pixels=tcfg["min_pixels"]))
        return out

    found = spots_all()  # warm-up: builds the integrator's engines
    t_spots = median_time(spots_all, run.repeats_slow)
    hits = [s for s in found if s["y"].size >= tcfg["min_spots"]]
    plane = indexing.detector_plane(ai)
    options = {"tolerance_px": tcfg["index_tolerance_px"], "min_fraction": tcfg["index_min_fraction"],
               "cell_tolerance": tcfg["index_cell_tolerance"], "min_spots": tcfg["min_spots"]}
    cell = data.meta["cell"]

    def index_hits() -> None:
        for s in hits:
            indexing.indexer().index(s["y"], s["x"], cell=cell, plane=plane, options=options)

    rows: list[dict[str, Any]] = []
    name = f"{data.name}: {frames.shape[0]} stills of {frames.shape[1]} x {frames.shape[2]}"
    rows.append({"part": "sx", "case": f"{name}: spot finding (background model + spots)", "unit": "frames/s",
                 "bare": None, "ours": frames.shape[0] / t_spots, "ratio": None})
    if hits and indexing.cctbx_available():
        index_hits()  # warm-up: starts the cctbx worker
        t_index = median_time(index_hits, run.repeats_slow)
        rows.append({"part": "sx", "case": f"{name}: indexing of the {len(hits)} hits (cctbx worker)",
                     "unit": "frames/s", "bare": None, "ours": len(hits) / t_index, "ratio": None})
    else:
        rows.append({"part": "sx", "case": f"{name}: indexing not timed ("
                     + ("no hit" if not hits else "cctbx-base not installed") + ")", "unit": "frames/s",
                     "bare": None, "ours": None, "ratio": None, "frames": len(hits)})
    t_find = median_time(lambda: tech.find(data), run.repeats_slow)
    rows.append({"part": "sx", "case": f"{name}: whole pipeline (spots, indexing, integration)", "unit": "frames/s",
                 "bare": None, "ours": frames.shape[0] / t_find, "ratio": None})
    return rows


def section_pipelines(run: Run) -> Section:
    sec = Section("pipelines", "pipelines vs the library's own path",
                  [("part", "part"), ("case", "case"), ("unit", "unit"), ("bare", "bare"), ("ours", "ours"),
                   ("ratio", "ours/bare time")])
    for part in (_azint_rows, _recon_rows, _sx_rows):
        sec.rows += part(run)
    sec.notes += [
        f"median of {run.repeats} interleaved repeats after one warm-up; ours/bare time > 1 = ours slower.",
        "azint: bare = pyFAI AzimuthalIntegrator built once from the simulated geometry, integrate1d with the "
        "pipeline's options (npt, unit, method, mask, Poisson error model, polarisation, solid angle); ours = "
        "AzintTechnique.run on a one-frame Dataset (integrator cache warm).",
        "recon: bare = the library's own call on the -log sinograms (bench_recon.bare_reconstruct: algotom "
        "fbp_reconstruction on the stack, ncore=1, one numba thread; scikit-image iradon per slice; tomopy "
        "gridrec); ours = recon.reconstruct on the same sinograms, and TomoTechnique.run from the raw "
        "projections (centre and defects prepared once).",
        f"sx: no bare counterpart (peakfinder8-style spots on pyFAI sigma-clipped statistics, rstbx indexing in "
        f"the cctbx worker process); median of {run.repeats_slow} after a warm-up.",
    ]
    return sec


# -- 4. search ---------------------------------------------------------------------------------------
def section_search(run: Run) -> Section:
    import study_engine

    if run.smoke:
        extra = run.tiny() + ["codec=[sz3]", "sweep.baselines=[]", "tracking.enabled=false", "sweep.workers=1"]
    else:
        extra = [f"codec.quant_blosc2.bounds=[{','.join(map(str, study_engine.SIGMA_GRID))}]"]
    r = study_engine.measure_search(run.tmp / "search", extra, cache_dir=run.cache)
    sec = Section("search", "bisection vs a sqrt(2) grid on the default tomography study",
                  [("codec", "codec"), ("grid_bound", "grid threshold"), ("grid_evaluations", "grid evaluations"),
                   ("bisect_bound", "bisect threshold"), ("bisect_evaluations", "bisect evaluations"),
                   ("bound_ratio", "bisect/grid"), ("same_answer", "within one sqrt(2) step"),
                   ("wall_s", "wall s")], list(r["codecs"]))
    sec.rows.append({"codec": "all (study wall time: grid / bisect)", "grid_evaluations": r["grid_evaluations"],
                     "bisect_evaluations": r["bisect_evaluations"], "wall_s": f"{r['grid_wall_s']:.1f} / "
                                                                              f"{r['bisect_wall_s']:.1f}",
                     "grid_wall_s": r["grid_wall_s"], "bisect_wall_s": r["bisect_wall_s"]})
    differ = [c["codec"] for c in r["codecs"] if not c["same_answer"]]
    sec.targets.append(Target("same answer: each codec's bisection threshold within one sqrt(2) step of the grid's",
                              not differ, "differ: " + ", ".join(differ) if differ else
                              f"{len(r['codecs'])} codecs; {r['bisect_evaluations']} vs {r['grid_evaluations']} "
                              f"evaluations"))
    sec.notes.append("grid: sqrt(2) steps over [2, 2048] (integers) for the absolute bounds"
                     + ("" if run.smoke else f", {study_engine.SIGMA_GRID} for the quantiser's sigma fraction")
                     + "; both studies on fresh journals (nothing reused), raw result cached.")
    return sec


# -- 5. scaling --------------------------------------------------------------------------------------
def section_scaling(run: Run) -> Section:
    import study_engine
    from lossbound.codecs import CodecSetting, CodecWorker
    from lossbound.study.context import ContextSpec, build_context
    from lossbound.study.point import evaluate_point

    base = 120 if run.smoke else 360
    setting = CodecSetting("sz3", "absolute", 32)
    sec = Section("scaling", "cost per point against frames (projections), and 1 vs 2 workers",
                  [("case", "case"), ("frames", "frames"), ("points", "points"), ("seconds", "seconds"),
                   ("per_point_s", "s/point"), ("per_frame_ms", "ms/frame"),
                   ("vs_first", "per frame vs 1x (or speed-up)")])
    with CodecWorker(isolate=False) as worker:
        for k in (1, 2, 4):
            cfg = compose([*run.tiny(), f"paths.reference_data={run.tmp / 'scaling' / f'{k}x'}",
                           f"dataset.simulation.n_angles={base * k}", "technique.noise_reference.mode=off"])
            spec = ContextSpec(technique=resolved(cfg, "technique"), dataset=resolved(cfg, "dataset"),
                               cache_dir=str(run.tmp / "scaling" / "cache"))
            ctx = build_context(spec)
            frames = int(ctx.data.payload_array.shape[0])
            evaluate_point(ctx, setting, codec_worker=worker, preview=False)  # warm-up
            per_point = median_time(lambda: evaluate_point(ctx, setting, codec_worker=worker, preview=False),
                                    run.repeats_slow)
            sec.rows.append({"case": f"{setting.label} point, {k}x projections", "factor": k, "frames": frames,
                             "points": 1, "seconds": per_point, "per_point_s": per_point,
                             "per_frame_ms": 1e3 * per_point / frames})
    first = sec.rows[0]["per_frame_ms"]
    for row in sec.rows:
        row["vs_first"] = row["per_frame_ms"] / first
    grows = [r for r in sec.rows if r["vs_first"] > 1.10]
    sec.targets.append(Target("linear or better: per-frame cost at 2x and 4x within +10 % of 1x", not grows,
                              ", ".join(f"{r['factor']}x {r['vs_first']:.2f}" for r in sec.rows[1:])))
    grid = [4, 16, 64] if run.smoke else study_engine.GRID[::2]
    extra = run.tiny() + (["codec=[sz3]", "sweep.baselines=[blosc2]", "tracking.enabled=false"] if run.smoke else [])
    for w in study_engine.measure_workers(run.tmp / "workers", extra, grid=grid, cache_dir=run.cache):
        sec.rows.append({"case": f"grid study, {w['workers']} worker(s)", "workers": w["workers"],
                         "points": w["points"], "seconds": w["wall_s"], "per_point_s": w["wall_s"] / w["points"],
                         "vs_first": w["speed_up"], "speed_up": w["speed_up"]})
    sec.notes += [
        "axis: the number of projections (angles; dataset.simulation.n_angles), because every stage processes "
        "all of them (codec round trip of the whole stack, flat/dark, -log and FBP over every angle); more "
        "detector rows would grow the codec's work only, as the pipeline reconstructs at most max_rows of them.",
        "one point = evaluate_point (codec round trip inline, pipeline, evaluators), median of "
        f"{run.repeats_slow} after a warm-up; contexts built without the noise reference (it does not change a "
        "point's work).",
        f"workers: the same grid study ({len(grid)} values per codec + baselines, fresh journal, raw result primed) "
        "with 1 and 2 worker processes; last column = speed-up over 1 worker.",
    ]
    return sec


# -- 6. feasibility ---------------------------------------------------------------------------------
def _simulated_geometry(shape: tuple[int, int]) -> dict[str, Any]:
    """A flat-detector geometry for a frame: 172 um pixels, beam at the centre, 200 mm, 1 A."""
    from pyFAI.detectors import Detector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    px = 172e-6
    det = Detector(pixel1=px, pixel2=px, max_shape=shape)
    ai = AzimuthalIntegrator(dist=0.2, poni1=shape[0] / 2 * px, poni2=shape[1] / 2 * px, detector=det,
                             wavelength=1e-10)
    return ai.get_config()


def _plugin_openmp() -> bool | None:
    import hdf5plugin

    return getattr(getattr(hdf5plugin.get_config(), "build_config", None), "openmp", None)


def _smoke_thresholds(run: Run) -> list[str]:
    """A thresholds file from a tiny study (smoke runs do not depend on runs/thresholds)."""
    import study_engine

    study_engine.study(study_engine.fresh(run.tmp, "feasibility", run.cache) + run.tiny() + [
        "codec=[sz3,quant_blosc2]", "search=grid", "sweep.bounds=[2]", "codec.quant_blosc2.bounds=[0.5]",
        "sweep.baselines=[]", "tracking.enabled=false", "sweep.workers=1"])
    return [str(run.tmp / "feasibility" / "thresholds" / "tomo.yaml")]


def section_feasibility(run: Run) -> Section:
    import h5py

    from lossbound.codecs import write_payload
    from lossbound.results.thresholds import feasibility, load_thresholds, setting_for

    files = run.thresholds or (_smoke_thresholds(run) if run.smoke
                               else sorted(glob.glob(str(runs_dir() / "thresholds" / "*.yaml"))))
    sec = Section("feasibility", "single-core compress throughput per thresholds setting, cores needed",
                  [("technique", "technique"), ("codec", "codec"), ("setting", "setting"), ("stack", "stack"),
                   ("mbps", "MB/s (1 core)"), ("cores_peak", f"cores for {PEAK_GBPS:g} GB/s"),
                   ("cores_detector", "cores for detector rate"), ("study_mbps", "study's MB/s"),
                   ("ratio", "ratio here")])
    stacks: dict[tuple, np.ndarray] = {}
    for path in files:
        doc = load_thresholds(Path(path))
        technique = doc.get("technique", Path(path).stem)
        detector_gbps = (doc.get("acquisition") or {}).get("detector_gbps")
        for name, entry in (doc.get("codecs") or {}).items():
            if entry.get("bound") is None:
                sec.notes.append(f"{technique} {name}: no threshold (nothing passed), not timed")
                continue
            try:
                setting = setting_for(entry)
            except Exception as exc:  # noqa: BLE001 - a stale entry is reported, not fatal
                sec.notes.append(f"{technique} {name}: skipped ({exc})")
                continue
            chunks = entry.get("chunks") or []
            known = entry.get("chunks_setting") is None and len(chunks) == 3 and chunks[0] == 1
            ny, nx = (int(chunks[1]), int(chunks[2])) if known else (1024, 1024)
            if run.smoke:
                ny, nx = min(ny, 128), min(nx, 128)
            dtype = np.dtype(entry.get("detector_dtype") or "uint16")
            frame_bytes = ny * nx * dtype.itemsize
            n = 2 if run.smoke else (int(min(1024, max(2, math.ceil(32e6 / frame_bytes)))) if known else 4)
            key = (n, ny, nx, dtype.name)
            if key not in stacks:
                stacks[key] = make_frames(frames=n, ny=ny, nx=nx, background=2.0, peaks=40, seed=0).astype(dtype)
            stack = stacks[key]
            geometry = _simulated_geometry((ny, nx)) if setting.spec.needs_geometry else None

            def write() -> int:
                buf = io.BytesIO()
                with h5py.File(buf, "w") as fh:
                    written = write_payload(fh, "data", stack, setting, geometry=geometry)
                    stored = sum(int(ds.id.get_storage_size()) for ds in written)
                return stored

            with single_thread():
                stored = write()  # warm-up: plugin, transform tables, integrator
                t = median_time(write, run.repeats_slow)
            mbps = stack.nbytes / 1e6 / t
            rates = {"peak": PEAK_GBPS, **({"detector": float(detector_gbps)} if detector_gbps else {})}
            feas = feasibility(mbps, rates) or {}
            sec.rows.append({
                "technique": technique, "codec": name, "setting": setting.label,
                "stack": f"{n} x {ny} x {nx} {dtype.name}" + ("" if known else " (frame size not in the file)"),
                "mbps": mbps, "cores_peak": feas.get("cores_for_peak"),
                "cores_detector": feas.get("cores_for_detector"), "detector_gbps": detector_gbps,
                "study_mbps": (entry.get("feasibility") or {}).get("compress_mbps_single_core"),
                "ratio": stack.nbytes / stored if stored else None, "geometry": "simulated" if geometry else None,
                "file": str(path)})
    if not files:
        sec.notes.append("no thresholds file in runs/thresholds: run a study first (python -m evaluate)")
    sec.notes += [
        "lossbound.codecs.write_payload of a simulated Poisson stack (make_frames: background 2 counts, 40 spots per "
        "frame, in the entry's detector dtype) into an in-memory HDF5 file, including close; the setting "
        "rebuilt with setting_for(entry); frame size from the entry's one-frame chunks, "
        + ("cropped to 128 x 128 (smoke); " if run.smoke else "frames for ~32 MB (2 to 1024 frames); ")
        + f"median of {run.repeats_slow} after a warm-up, on one thread: BLOSC_NTHREADS=1 (hdf5plugin's Blosc and "
        "Blosc2 filters use 1 thread unless it says otherwise), threadpoolctl limits 1 (BLAS, OpenMP of "
        f"numpy/pyFAI); hdf5plugin built with OpenMP: {_plugin_openmp()}.",
        "cores = ceil(rate / single-core throughput) with lossbound.results.thresholds.feasibility, 1 GB = 1e9 B; "
        "detector rate = the file's acquisition.detector_gbps. 'study's MB/s' = what the study recorded "
        "(measured with both cores busy).",
    ]
    if any(r["geometry"] for r in sec.rows):
        sec.notes.append("sparsify_* (needs the detector geometry): timed with a simulated flat-detector geometry "
                         "(172 um pixels, beam at the frame centre, 200 mm, 1 A) on the same simulated frames.")
    return sec


# -- 6b. acquisition -------------------------------------------------------------------------------
QUANT_TARGET_MBPS = 2000.0
CHAIN_FRAMES = 4  # frames per timed chain write (the sparsification: one model block)
SPARSIFY_TARGET_MBPS = 300.0
# every codec family at a representative setting (the thresholds' values vary by dataset)
ACQ_CHAINS = [("quant_bslz4", "step_sigma", 1.0, None), ("quant_zstd", "step_sigma", 1.0, None),
              ("quant_blosc2", "step_sigma", 1.0, None), ("sparsify_m2", "k_sigma", 3.0, None),
              ("sz3", "absolute", 1.0, None), ("sz", "absolute", 1.0, None), ("zfp", "absolute", 1.0, "float32"),
              ("sperr", "absolute", 1.0, "float32"),
              ("bitshuffle_lz4", None, None, None), ("zstd", None, None, None), ("blosc2", None, None, None)]


def _acquisition_frames(run: Run) -> list[dict[str, Any]]:
    """The two detector frames of the issue, with their masks and geometries: a 4 Mpx uint32
    powder frame (Eiger 4M, CeO2; gaps 0xFFFFFFFF) and 6 Mpx int32 serial-crystallography
    stills (Pilatus 6M; gaps -1, bad pixels -2), both from LossBound's simulations."""
    from lossbound.codecs.specs import CODECS
    from lossbound.pipelines.azint.simulate import simulate_powder
    from lossbound.pipelines.sx.simulate import simulate_stills

    model_every = int(CODECS.get("sparsify_m2").transform_kwargs["model_every"])
    if run.smoke:
        powder, ai_p = simulate_powder(detector="Pilatus300k", poni_px=[240.0, 300.0], distance_mm=120.0)
        stills, ai_s, _ = simulate_stills(n_frames=2, misses=[1], detector="Pilatus300k", beam_px=[240.0, 300.0],
                                          distance_mm=120.0)
    else:
        powder, ai_p = simulate_powder(detector="Eiger4M", poni_px=[1100.0, 1000.0], distance_mm=150.0)
        stills, ai_s, _ = simulate_stills(n_frames=2, misses=[], detector="Pilatus6M", beam_px=[1231.0, 1263.0],
                                          distance_mm=200.0)
    frame = powder[0]
    ok = (frame >= 0) & (frame < 1_000_000)
    frame_u32 = np.where(ok, frame, 0).astype(np.uint32)
    frame_u32[frame < 0] = np.iinfo(np.uint32).max  # the Eiger's gap sentinel
    ok_s = (stills >= 0) & (stills < 1_000_000)
    # one sparsification block of frames (model_every); the two simulated stills alternate
    stack = np.ascontiguousarray(np.resize(stills, (model_every, *stills.shape[1:])))
    ok_stack = np.resize(ok_s, stack.shape)
    name_p = "Pilatus 300k uint32 (smoke)" if run.smoke else "Eiger 4M uint32"
    name_s = "Pilatus 300k int32 (smoke)" if run.smoke else "Pilatus 6M int32"
    return [
        {"name": f"{name_p} powder, {frame.size / 1e6:.1f} Mpx", "one": frame_u32, "valid_one": ok,
         "stack": np.ascontiguousarray(np.resize(frame_u32, (model_every, *frame.shape))),
         "valid_stack": np.resize(ok, (model_every, *frame.shape)), "geometry": ai_p.get_config()},
        {"name": f"{name_s} SX stills, {stills[0].size / 1e6:.1f} Mpx", "one": stills[0], "valid_one": ok_s[0],
         "stack": stack, "valid_stack": ok_stack, "geometry": ai_s.get_config()},
    ]


def _pyfai_sparsify_cpu(frames: np.ndarray, valid: np.ndarray, geometry: dict[str, Any]) -> None:
    """What pyFAI's sparsify-Bragg does per frame, on the CPU engine: sigma-clipped shell
    statistics (``sigma_clip_ng``, CSR, cython) and the pixels above the cut picked out."""
    from lossbound.diffraction.detector import background_model, integrator_for

    ai = integrator_for(geometry, frames.shape[1:])
    for frame, ok in zip(frames, valid):
        bg, sigma = background_model(ai, frame, ~ok, npt=500, thres=3.0, max_iter=5)
        picked = ok & (frame > bg + 3.0 * sigma)
        np.flatnonzero(picked), frame[picked]  # noqa: B018 - the sparse frame pyFAI would store


def section_acquisition(run: Run) -> Section:
    import h5py

    from lossbound.codecs import CodecSetting, CodecWorker, TRANSFORMS
    from lossbound.codecs.quantiser import quantise_counts
    from lossbound.codecs.timing import median_seconds, time_setting
    from lossbound.results.thresholds import feasibility

    sec = Section("acquisition", "codecs at acquisition speed on one quiet core: transforms, chains, bare filters",
                  [("frame", "frame"), ("path", "path"), ("codec", "codec"), ("setting", "setting"),
                   ("timed", "timed"), ("compress_mbps", "compress MB/s"), ("decompress_mbps", "decompress MB/s"),
                   ("cores_c", f"cores for {PEAK_GBPS:g} GB/s (compress)"),
                   ("cores_d", f"cores for {PEAK_GBPS:g} GB/s (decompress)"), ("ratio", "ratio")])
    repeats = max(5, run.repeats)
    quant, sparse = {}, {}

    def add(frame: str, path: str, codec: str, setting: str, timed: str, c: float | None, d: float | None,
            ratio: float | None = None) -> None:
        f = feasibility(c, {"peak": PEAK_GBPS}, decompress_mbps=d) or {}
        sec.rows.append({"frame": frame, "path": path, "codec": codec, "setting": setting, "timed": timed,
                         "compress_mbps": c, "decompress_mbps": d, "cores_c": f.get("cores_for_peak"),
                         "cores_d": f.get("decompress_cores_for_peak"), "ratio": ratio})

    frames = _acquisition_frames(run)
    for fr in frames:
        one, ok, stack, ok_stack = fr["one"], fr["valid_one"], fr["stack"], fr["valid_stack"]
        shape_one = f"1 x {' x '.join(map(str, one.shape))} {one.dtype.name}"
        shape_stack = f"{' x '.join(map(str, stack.shape))} {stack.dtype.name}"
        with single_thread():
            # the transforms alone, in memory
            t = median_seconds(lambda: quantise_counts(one, 1.0, valid=ok), repeats)
            quant[fr["name"]] = one.nbytes / 1e6 / t
            add(fr["name"], "transform", "noise quantiser", "f 1, masked", shape_one, quant[fr["name"]], None)
            sparsify = TRANSFORMS.get("bragg_sparsify")
            params = CodecSetting("sparsify_m2", "k_sigma", 3.0).transform_params()
            t = median_seconds(lambda: sparsify(stack, **params, valid=ok, geometry=fr["geometry"]),
                               max(5, run.repeats_slow))
            sparse[fr["name"]] = stack.nbytes / 1e6 / t
            add(fr["name"], "transform", "Bragg sparsification", f"k 3, margin 2, model every {params['model_every']}",
                shape_stack, sparse[fr["name"]], None)
            t = median_seconds(lambda: _pyfai_sparsify_cpu(stack[:2], ok_stack[:2], fr["geometry"]), 5)
            add(fr["name"], "pyFAI CPU", "sigma_clip_ng + pick", "3 sigma, per frame", f"2 frames of {shape_stack}",
                stack[:2].nbytes / 1e6 / t, None)
            # the bare lossless filters: h5py alone, the raw frame
            for name, make in (("bitshuffle_lz4", lambda: __import__("hdf5plugin").Bitshuffle(cname="lz4")),
                               ("zstd", lambda: __import__("hdf5plugin").Zstd()),
                               ("blosc2", lambda: __import__("hdf5plugin").Blosc2(
                                   cname="zstd", clevel=5, filters=__import__("hdf5plugin").Blosc2.BITSHUFFLE))):
                state: dict[str, Any] = {}

                def write() -> None:
                    buf = io.BytesIO()
                    with h5py.File(buf, "w") as fh:
                        ds = fh.create_dataset("d", data=one[None], chunks=(1, *one.shape), **make())
                        state["stored"] = int(ds.id.get_storage_size())
                    state["bytes"] = buf.getvalue()

                def read() -> None:
                    with h5py.File(io.BytesIO(state["bytes"]), "r") as fh:
                        fh["d"][()]

                tc = median_seconds(write, repeats)
                td = median_seconds(read, repeats)
                add(fr["name"], "bare filter", name, "h5py, raw frame", shape_one, one.nbytes / 1e6 / tc,
                    one.nbytes / 1e6 / td, one.nbytes / state["stored"])
        # every chain through LossBound's write/read, in the codec worker (a codec that dies or
        # crawls fails its row)
        # the detector mask is one frame's, written once per stack as a detector file holds it
        chain_frames = np.ascontiguousarray(stack[:CHAIN_FRAMES])
        with CodecWorker(timeout=120 if run.smoke else 900) as worker:
            for codec, mode, value, dtype in ACQ_CHAINS:
                setting = CodecSetting(codec, mode, value, input_dtype=dtype)
                block = int(setting.transform_params().get("model_every", 1) or 1)
                data = stack if block > 1 else chain_frames
                label = setting.label
                try:
                    setting.validate(data.dtype, has_geometry=True)
                    rec = worker.call(functools.partial(time_setting, data, setting, valid=fr["valid_one"],
                                                        geometry=fr["geometry"], repeats=repeats, max_mb=1e9,
                                                        min_frames=block, budget_s=None), label=label)
                except Exception as exc:  # noqa: BLE001 - one codec's failure (a CodecCrash too) is a note
                    sec.notes.append(f"{fr['name']} {label}: {str(exc).splitlines()[0]}")
                    continue
                add(fr["name"], "chain (LossBound)", codec, label, rec["frames"], rec["compress_mbps"],
                    rec["decompress_mbps"], rec["ratio"])
    q_ok = all(v >= QUANT_TARGET_MBPS for v in quant.values())
    s_ok = all(v >= SPARSIFY_TARGET_MBPS for v in sparse.values())
    sec.targets.append(Target(f"quantiser transform >= {QUANT_TARGET_MBPS / 1e3:g} GB/s per core on both frames", q_ok,
                              ", ".join(f"{k}: {v:.0f} MB/s" for k, v in quant.items())))
    sec.targets.append(Target(f"sparsification >= {SPARSIFY_TARGET_MBPS:g} MB/s per core", s_ok,
                              ", ".join(f"{k}: {v:.0f} MB/s" for k, v in sparse.items())))
    sec.notes += [
        "one thread (lossbound.codecs.timing.single_thread: BLOSC_NTHREADS=1, threadpoolctl 1), nothing else of "
        f"the suite running; median of {repeats} after a warm-up; MB = 1e6 bytes of detector data; cores = "
        f"ceil({PEAK_GBPS:g} GB/s / one core's MB/s).",
        "transform: the pre-transform alone, in memory, output newly allocated (quantiser: quantise_counts with the "
        "detector mask, one frame; sparsification: bragg_sparsify on one block of model_every frames with the "
        "detector mask, the two simulated frames repeated).",
        f"chain (LossBound): lossbound.codecs.timing.time_setting on {CHAIN_FRAMES} frames (the sparsification: one "
        "block of model_every frames) with the detector mask, i.e. write_payload (masked-pixel fill, transform, "
        "dtype, filter, HDF5 chunk write of one frame per chunk, the mask once and each frame's masked values "
        "beside the payload) into an in-memory HDF5 file, and read_payload from a fresh handle; SZ3, SZ at 1 count "
        "absolute, ZFP and SPERR at 1 count on float32 (their integer hazards).",
        "bare filter: h5py create_dataset with the hdf5plugin filter on the raw frame, no mask handling, in memory.",
        "pyFAI CPU: pyFAI's sparsify-Bragg needs OpenCL (pyFAI.app.sparsify refuses to start without it; there is no "
        "pyFAI.ext.sparsify in this pyFAI); its per-frame work on the CPU engine is the sigma-clipped shell "
        "statistics (sigma_clip_ng, CSR, cython) and the pick above the cut, timed here per frame. LossBound runs "
        "that clipping once per model_every frames and refreshes each frame's level per shell in a compiled pass.",
    ]
    return sec


# -- 7. e2e ---------------------------------------------------------------------------------------
def _e2e_jobs(run: Run) -> list[tuple[str, str | None, list[str]]]:
    """(technique, shared dataset or None, extra overrides) of the whole set."""
    if run.smoke:
        return [("tomo", None, [*run.tiny(), "codec=[sz3]", "search=grid", "sweep.bounds=[4,64]"])]
    shared = {"tomo": ["tooth"], "azint": ["ceo2_pilatus", "agbh_saxs", "eiger_vacuum"], "sx": ["thaumatin"],
              "ptycho": ["siemens_star"]}
    jobs: list[tuple[str, str | None, list[str]]] = [(t, None, []) for t in shared]
    jobs += [(t, d, []) for t, names in shared.items() for d in names]
    return jobs


def _dataset_missing(technique: str, dataset: str) -> str | None:
    """Why a shared dataset cannot run here (None: its files are there)."""
    path = str(resolved(compose([f"technique={technique}", f"dataset={dataset}"]), "dataset")["path"])
    return None if glob.glob(path) else f"not found: {path} (../shared/data absent on this machine?)"


def section_e2e(run: Run) -> Section:
    sec = Section("e2e", "python -m evaluate end to end, first run (fresh runs_dir and raw cache)",
                  [("technique", "technique"), ("dataset", "dataset"), ("wall_s", "wall s"), ("exit", "exit"),
                   ("note", "note")])
    base = run.tmp / "e2e"
    for technique, dataset, extra in _e2e_jobs(run):
        label = dataset or f"default (sim_{technique})"
        missing = _dataset_missing(technique, dataset) if dataset else None
        if missing:
            sec.rows.append({"technique": technique, "dataset": label, "wall_s": None, "exit": None,
                             "note": f"skipped: {missing}"})
            continue
        logfile = base / f"{technique}-{dataset or 'default'}.log"
        logfile.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "lossbound", "study", f"technique={technique}", *([f"dataset={dataset}"] if dataset else []),
               f"paths.runs_dir={base / 'runs'}", f"paths.cache_dir={base / 'cache'}", "sweep.progress=false", *extra]
        with open(logfile, "w") as fh:
            proc, wall = seconds(lambda: subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT))
        note = "" if proc.returncode == 0 else "failed: " + (logfile.read_text().strip().splitlines() or [""])[-1][:200]
        sec.rows.append({"technique": technique, "dataset": label, "wall_s": wall, "exit": proc.returncode,
                         "note": note, "command": " ".join(cmd[1:])})
    ran = [r for r in sec.rows if r["wall_s"] is not None]
    total = sum(r["wall_s"] for r in ran)
    skipped = len(sec.rows) - len(ran)
    failed = [r for r in ran if r["exit"] != 0]
    sec.rows.append({"technique": "all", "dataset": f"{len(ran)} runs", "wall_s": total,
                     "exit": max((r["exit"] for r in ran), default=0), "note": f"{skipped} skipped" if skipped else ""})
    met = None if (skipped or run.smoke) else (total <= E2E_TARGET_S and not failed)
    sec.targets.append(Target(f"whole set (3 defaults + every shared dataset) <= {E2E_TARGET_S // 60} minutes",
                              met, f"{total / 60:.1f} min" + (f", {skipped} skipped" if skipped else "")
                              + (f", {len(failed)} failed" if failed else "")))
    sec.notes += ["each run in its own process, one after another, with paths.runs_dir and paths.cache_dir under a "
                  "temporary folder (fresh MLflow store, journal, thresholds; raw results and noise references "
                  "computed, not reused); the built-in simulations in reference_data/ are reused when present "
                  "(generated on first use otherwise, and then counted); sweep.workers=auto (every core).",
                  f"logs: {base} (deleted at the end unless --keep)"]
    return sec


# -- campaign scale -------------------------------------------------------------------------------
CAMPAIGN_SIZES = (10, 20, 40)
CAMPAIGN_ARGS = ["codec=[sz3]", "search=grid", "sweep.bounds=[2,8]", "sweep.progress=false"]


@contextlib.contextmanager
def _tracking_server(folder: Path):
    """``mlflow server`` (sqlite backend) on 127.0.0.1, stopped on exit."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with open(folder / "server.log", "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                                 "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
                                 "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"mlflow server exited: {(folder / 'server.log').read_text()[-500:]}")
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def _campaign_scans(folder: Path, n: int) -> list[dict[str, Any]]:
    """``n`` tiny simulated frames (Pilatus 300k; powder and SAXS alternating, seeds 0..n-1)."""
    from lossbound.pipelines.azint.simulate import write_simulation

    entries = []
    for i in range(n):
        group = "powder" if i % 2 == 0 else "saxs"
        h5, poni = folder / group / f"scan{i:03d}.h5", folder / group / f"scan{i:03d}.poni"
        if not h5.exists():
            h5.parent.mkdir(parents=True, exist_ok=True)
            write_simulation(h5, poni, detector="Pilatus300k", poni_px=[300.0, 240.0], seed=i,
                             distance_mm=120.0 if group == "powder" else 900.0, pattern=group)
        e = {"name": h5.stem, "group": group, "path": str(h5), "poni": str(poni), "sample": group}
        if group == "powder":
            e["calibrant"] = "CeO2"
        entries.append(e)
    return entries


def _point_writer(uri: str, experiment: str, n: int, out) -> None:
    """One job's tracking traffic for ``n`` points, as a study logs them (lossbound.tracking:
    create the run, one batch of params/metrics/tags, terminate), against ``uri``."""
    from lossbound.tracking.tracker import Tracker

    t = Tracker({"tracking_uri": uri, "experiment": experiment})
    parent = t.start_run("study", tags={"lossbound.role": "study"})
    t0 = time.perf_counter()
    for i in range(n):
        rid = t.start_run(f"point {i}", parent=parent, tags={"lossbound.role": "point", "point_id": f"{i:016x}"})
        t.log(rid, params={"codec": "sz3", "mode": "absolute", "bound": 2.0 ** (i % 8), "dataset": "stress"},
              metrics={f"metric_{k}": float(k * i) for k in range(30)}, tags={"passed": True, "failures": "none"})
        t.end_run(rid)
    out.put(time.perf_counter() - t0)
    t.end_run(parent)


def _server_capacity(uri: str, writers: int, n: int) -> float:
    """Points per second the server records with ``writers`` jobs logging at once."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_point_writer, args=(uri, f"stress-{writers}", n, q)) for _ in range(writers)]
    for p in procs:
        p.start()
    times = [q.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    return writers * n / max(times)


def section_campaign(run: Run) -> Section:
    from mlflow.tracking import MlflowClient

    from lossbound.results.report import write_report

    sec = Section("campaign", "lossbound campaign run of N tiny simulated datasets (joblib, 2 jobs) into a "
                  "local mlflow server",
                  [("datasets", "datasets"), ("points", "points"), ("jobs_s", "jobs s"),
                   ("points_per_s", "points/s"), ("tracking_ms_per_point", "tracking ms/point"),
                   ("merge_ms", "merge ms (mean / last)"), ("report_s", "report s"),
                   ("report_mb", "report MB"), ("thresholds_kb", "thresholds KB"), ("lost", "lost runs")])
    sizes = (2, 4) if run.smoke else CAMPAIGN_SIZES
    base = run.tmp / "campaign"
    entries = _campaign_scans(base / "scans", max(sizes))
    with _tracking_server(base / "server") as uri:
        for n in sizes:
            home = base / f"n{n}"
            home.mkdir(parents=True, exist_ok=True)
            camp = home / "campaign.yaml"
            camp.write_text(yaml.safe_dump({"technique": "azint", "datasets": entries[:n]}, sort_keys=False))
            env = {**os.environ, "LOSSBOUND_HOME": str(home / "runs"), "MLFLOW_TRACKING_URI": uri,
                   "MLFLOW_EXPERIMENT_NAME": f"campaign-{n}"}
            cmd = [sys.executable, "-m", "lossbound", "campaign", "run", str(camp), *CAMPAIGN_ARGS]
            with open(home / "campaign.log", "w") as fh:
                proc, wall = seconds(lambda: subprocess.run(cmd, cwd=home, env=env, stdout=fh,
                                                            stderr=subprocess.STDOUT))
            client = MlflowClient(uri)
            exp = client.get_experiment_by_name(f"campaign-{n}")
            runs = client.search_runs([exp.experiment_id], max_results=5000)
            studies = [r for r in runs if r.data.tags.get("lossbound.role") == "study"]
            points = sum(int(r.data.metrics.get("n_evaluated", 0)) for r in studies)
            merges = [r.data.metrics.get("thresholds_merge_seconds", math.nan) for r in
                      sorted(studies, key=lambda r: r.info.end_time or 0)]
            tracking = sum(r.data.metrics.get("tracking_seconds", 0.0) for r in studies)
            thresholds = home / "runs" / "thresholds" / "azint.yaml"
            report_dir = home / "report-timing"
            report_s = median_time(lambda: write_report(thresholds, journal_dir=home / "runs" / "journal",
                                                        reports_dir=report_dir), run.repeats_slow)
            sec.rows.append({
                "datasets": n, "points": points, "jobs_s": wall, "points_per_s": points / wall if wall else None,
                "tracking_ms_per_point": 1e3 * tracking / points if points else None,
                "merge_ms": f"{1e3 * float(np.nanmean(merges)):.0f} / {1e3 * merges[-1]:.0f}" if merges else None,
                "report_s": report_s, "report_mb": (report_dir / "azint.html").stat().st_size / 1e6,
                "thresholds_kb": thresholds.stat().st_size / 1e3,
                "lost": sum(r.info.status != "FINISHED" for r in runs) + (n - len(studies)),
                "exit": proc.returncode})
        # what one sqlite-backed server records at all, k jobs logging points at once
        capacity = {k: _server_capacity(uri, k, 10 if run.smoke else 60) for k in ((1, 2) if run.smoke else (1, 2, 4, 8))}
    sec.notes.append("tracking server capacity (sqlite backend, 1 server worker, on this machine, clients included): "
                     + ", ".join(f"{k} job{'s' if k > 1 else ''} logging at once {v:.1f} points/s"
                                 for k, v in capacity.items()))
    first, last = sec.rows[0], sec.rows[-1]
    grow = last["datasets"] / first["datasets"]
    sec.notes += [
        f"from {first['datasets']} to {last['datasets']} datasets ({grow:g}x): points/s "
        f"{first['points_per_s']:.2f} -> {last['points_per_s']:.2f}, tracking ms/point "
        f"{first['tracking_ms_per_point']:.0f} -> {last['tracking_ms_per_point']:.0f}, report "
        f"{first['report_s']:.1f} -> {last['report_s']:.1f} s",
        "each size in a fresh runs folder (thresholds, journal, raw cache) and its own MLflow experiment on one "
        "server; points = lossy and lossless points evaluated (1 codec x 2 values + 3 lossless baselines per "
        "dataset); tracking = seconds the jobs spent in MLflow client calls (study and point runs, artifacts), "
        "per point; merge = one job's thresholds-file update under its lock (mean over jobs / the last one, "
        "the file then holding every dataset); report = lossbound report on the final file (median).",
        f"logs: {base} (deleted at the end unless --keep)"]
    sec.targets.append(Target("0 lost runs at every size", all(r["lost"] == 0 and r["exit"] == 0 for r in sec.rows),
                              ", ".join(f"{r['datasets']}: {r['lost']}" for r in sec.rows)))
    return sec


SECTIONS: dict[str, Callable[[Run], Section]] = {
    "overhead": section_overhead, "codec": section_codec, "pipelines": section_pipelines, "search": section_search,
    "scaling": section_scaling, "feasibility": section_feasibility,
    "acquisition": section_acquisition, "e2e": section_e2e, "campaign": section_campaign,
}
DEFAULT_SECTIONS = [name for name in SECTIONS if name not in ("e2e", "campaign")]


def run_section(name: str, run: Run) -> Section:
    """One section, its failure recorded instead of ending the suite."""
    t0 = time.perf_counter()
    try:
        sec = SECTIONS[name](run)
    except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
        traceback.print_exc()
        sec = Section(name, "failed", [], error=f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
    sec.seconds = time.perf_counter() - t0
    return sec


def save(doc: dict[str, Any], path: Path) -> None:
    """Write the results file (JSON, NaN and infinities as null)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(plain(doc), indent=1))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and 2 repeats (checks the suite runs)")
    parser.add_argument("--json", type=Path, default=None, help="results file (default runs/benchmarks/<time>.json)")
    parser.add_argument("--only", nargs="+", choices=list(SECTIONS), metavar="SECTION",
                        help=f"run these sections only: {', '.join(SECTIONS)}")
    parser.add_argument("--e2e", action="store_true", help="also run the long end-to-end section")
    parser.add_argument("--thresholds", nargs="+", default=None, metavar="YAML",
                        help="thresholds files for 'feasibility' (default runs/thresholds/*.yaml; "
                             "smoke: one from a tiny study)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (studies, e2e logs)")
    args = parser.parse_args(argv)
    names = list(args.only or DEFAULT_SECTIONS)
    if args.e2e and "e2e" not in names:
        names.append("e2e")

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hdf5plugin").setLevel(logging.WARNING)
    started = _dt.datetime.now().astimezone()
    out_path = args.json or runs_dir() / "benchmarks" / f"{started:%Y-%m-%dT%H-%M-%S}.json"
    machine = machine_info()
    print(f"# LossBound benchmarks{' (smoke)' if args.smoke else ''}, {started:%Y-%m-%d %H:%M}\n")
    print(machine_table(machine) + "\n", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="lossbound-bench-"))
    run = Run(smoke=args.smoke, tmp=tmp, thresholds=args.thresholds)
    command = ["python", "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]
    doc: dict[str, Any] = {"command": " ".join(command), "smoke": args.smoke,
                           "started": started.isoformat(timespec="seconds"), "machine": machine, "sections": {}}
    t_all = time.perf_counter()
    try:
        for name in names:
            sec = run_section(name, run)
            print(sec.markdown(smoke=args.smoke) + "\n", flush=True)
            doc["sections"][name] = sec.as_json()
            doc["seconds"] = time.perf_counter() - t_all
            save(doc, out_path)  # after every section: a long run interrupted later keeps what it measured
    finally:
        if args.keep:
            print(f"scratch folder kept: {tmp}")
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    doc["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    save(doc, out_path)
    failed = [n for n, s in doc["sections"].items() if s["error"]]
    print(f"total {doc['seconds']:.1f} s; results saved to {out_path}" + (f"; FAILED: {', '.join(failed)}" if failed
                                                                          else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
