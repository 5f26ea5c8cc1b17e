"""Study-engine benchmarks on the default tomography data (not tests: timings depend on load).

    python benchmarks/study_engine.py overhead      # framework overhead of the default study
    python benchmarks/study_engine.py search        # bisection vs a sqrt(2) grid: evaluations, time, answer
    python benchmarks/study_engine.py workers       # 1 vs 2 worker processes, same study

Every run uses a fresh store, journal and thresholds folder under a temporary directory (the
raw-result cache is shared with runs/cache, so a dataset's raw reconstruction is computed
once, as in real use). Each prints a Markdown table; `overhead` ends with the line
``framework_overhead_percent=<value>``.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# sqrt(2) steps over [2, 2048], rounded to integers: the default data are integer counts, where a
# fractional absolute bound is no tighter (and SZ exceeds it by rounding it up)
GRID = [round(2 * math.sqrt(2) ** k) for k in range(21)]


def _study(overrides: list[str]):
    import evaluate  # noqa: F401 - registers the ${lossbound_root:} resolver
    from hydra import compose, initialize_config_dir

    from lossbound.study import context

    context._CONTEXTS.clear()  # each study builds its context as a new process would
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return evaluate.run(cfg)


def _fresh(tmp: Path, name: str) -> list[str]:
    runs = tmp / name
    return [f"paths.runs_dir={runs}", f"paths.cache_dir={ROOT / 'runs' / 'cache'}", "sweep.progress=false"]


def overhead(tmp: Path, extra: list[str]) -> None:
    # An existing store and raw result, as for every study after a facility's first one.
    _study(_fresh(tmp, "overhead") + ["codec=[sz3]", "search=grid", "sweep.bounds=[8]", "sweep.baselines=[]",
                                      f"paths.journal_dir={tmp / 'prime-journal'}", *extra])
    res = _study(_fresh(tmp, "overhead") + ["sweep.workers=1", *extra])
    evaluated = [p for p in res.points if not p.reused]
    pct = 100.0 * (res.wall_seconds - res.work_seconds) / res.wall_seconds
    print("| study | points | wall s | own work s | framework s | overhead |")
    print("|---|---|---|---|---|---|")
    print(f"| default tomography, 1 worker | {len(evaluated)} | {res.wall_seconds:.1f} | {res.work_seconds:.1f} "
          f"| {res.wall_seconds - res.work_seconds:.1f} | {pct:.1f} % |")
    print("own work = reading the dataset, raw result and evaluator references, and per point the codec round "
          "trip, reconstruction and evaluators; framework = everything else (MLflow, journal, thresholds, "
          "figures, codec warm-up).")
    print(f"framework_overhead_percent={pct:.1f}")


def search(tmp: Path, extra: list[str]) -> None:
    rows = []
    for name, over in (("grid", ["search=grid", f"sweep.bounds=[{','.join(map(str, GRID))}]"]),
                       ("bisect", ["search=bisect"])):
        t0 = time.perf_counter()
        res = _study(_fresh(tmp, name) + over + ["tracking.figures=none", *extra])
        rows.append((name, res, time.perf_counter() - t0))
    print("| codec | grid threshold | grid evaluations | bisect threshold | bisect evaluations | ratio |")
    print("|---|---|---|---|---|---|")
    (_, g, tg), (_, b, tb) = rows
    for codec in g.codecs:
        eg, eb = g.codecs[codec], b.codecs[codec]
        ratio = eb["bound"] / eg["bound"] if eg["bound"] and eb["bound"] else float("nan")
        print(f"| {codec} | {eg['bound']} | {eg['evaluations']} | {eb['bound']} | {eb['evaluations']} | {ratio:.3f} |")
    n_g = sum(e["evaluations"] for e in g.codecs.values())
    n_b = sum(e["evaluations"] for e in b.codecs.values())
    print(f"\nevaluations: grid {n_g}, bisect {n_b} ({n_b / n_g:.2f} of the grid); "
          f"wall: grid {tg:.0f} s, bisect {tb:.0f} s")


def workers(tmp: Path, extra: list[str]) -> None:
    _study(_fresh(tmp, "prime") + ["codec=[sz3]", "search=grid", "sweep.bounds=[8]", "tracking.enabled=false"])
    grid = ["search=grid", f"sweep.bounds=[{','.join(map(str, GRID[::2]))}]", "tracking.figures=none"]
    times = {}
    for n in (1, 2):
        res = _study(_fresh(tmp, f"w{n}") + grid + [f"sweep.workers={n}", *extra])
        times[n] = (res.wall_seconds, len([p for p in res.points if not p.reused]))
    print("| workers | points | wall s | speed-up |")
    print("|---|---|---|---|")
    for n, (wall, pts) in times.items():
        print(f"| {n} | {pts} | {wall:.1f} | {times[1][0] / wall:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["overhead", "search", "workers"])
    parser.add_argument("overrides", nargs="*", help="extra config overrides, e.g. dataset=tooth")
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        {"overhead": overhead, "search": search, "workers": workers}[args.what](Path(tmp), args.overrides)


if __name__ == "__main__":
    main()
