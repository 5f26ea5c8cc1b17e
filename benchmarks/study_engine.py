"""Study-engine benchmarks on the default tomography data (not tests: timings depend on load).

    python benchmarks/study_engine.py overhead      # framework overhead of the default study
    python benchmarks/study_engine.py search        # bisection vs a sqrt(2) grid: evaluations, time, answer
    python benchmarks/study_engine.py workers       # 1 vs 2 worker processes, same study

Every run uses a fresh store, journal and thresholds folder under a temporary directory (the
raw-result cache is shared with runs/cache, so a dataset's raw reconstruction is computed
once, as in real use). Each prints a Markdown table; `overhead` ends with the line
``framework_overhead_percent=<value>``. ``benchmarks/run.py`` runs the same measurements
(``measure_*``) as sections of the whole suite.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lossbound.core.paths import runs_dir  # noqa: E402
from benchtools import ROOT, compose, markdown_table  # noqa: E402

# sqrt(2) steps over [2, 2048], rounded to integers: the default data are integer counts, where a
# fractional absolute bound is no tighter (and SZ exceeds it by rounding it up)
GRID = [round(2 * math.sqrt(2) ** k) for k in range(21)]
# sqrt(2) steps over the quantiser's default range [0.25, 4] (fractions of sigma, not integers)
SIGMA_GRID = [round(0.25 * math.sqrt(2) ** k, 4) for k in range(9)]
SQRT2_STEP = math.log(math.sqrt(2)) + 1e-6


def study(overrides: Sequence[str]):
    """Run one study in this process, its context built as a new process would; ``StudyResult``."""
    from lossbound.cli import evaluate
    from lossbound.study import context

    context.forget_contexts()  # each study builds its context as a new process would
    return evaluate.run(compose(overrides))


def fresh(tmp: Path, name: str, cache_dir: Path | None = None) -> list[str]:
    """A fresh store, journal and thresholds folder ``tmp/name``; the raw-result cache
    ``cache_dir`` (default: the project's runs/cache, shared as in real use)."""
    cache = cache_dir if cache_dir is not None else runs_dir() / "cache"
    return [f"paths.runs_dir={tmp / name}", f"paths.cache_dir={cache}", "sweep.progress=false"]


def measure_overhead(tmp: Path, extra: Sequence[str] = (), *, cache_dir: Path | None = None) -> dict[str, Any]:
    """Wall time vs own work (``StudyResult.work_seconds``) of the study ``extra`` describes
    (default: the default tomography study), one worker, on a fresh journal with the store
    and raw result already there (as for every study after a facility's first one)."""
    base = fresh(tmp, "overhead", cache_dir)
    study(base + [*extra, "codec=[sz3]", "search=grid", "sweep.bounds=[8]", "sweep.baselines=[]",
                  f"paths.journal_dir={tmp / 'prime-journal'}"])
    res = study(base + ["sweep.workers=1", *extra])
    evaluated = [p for p in res.points if not p.reused]
    return {"study": "default tomography, 1 worker", "points": len(evaluated), "wall_s": res.wall_seconds,
            "work_s": res.work_seconds, "framework_s": res.wall_seconds - res.work_seconds,
            "overhead_pct": 100.0 * (res.wall_seconds - res.work_seconds) / res.wall_seconds}


def measure_search(tmp: Path, extra: Sequence[str] = (), *, grid: Sequence[float] = GRID,
                   cache_dir: Path | None = None) -> dict[str, Any]:
    """Bisection vs a grid (default: sqrt(2) steps over [2, 2048]) on the same study: per codec
    both thresholds, their evaluations and whether they agree within one sqrt(2) step; wall
    time of each study. A codec's own ``bounds`` (the quantiser's) override the grid: pass
    ``codec.<name>.bounds=[...]`` in ``extra`` for a sqrt(2) grid there too."""
    results = {}
    for name, over in (("grid", ["search=grid", f"sweep.bounds=[{','.join(map(str, grid))}]"]),
                       ("bisect", ["search=bisect"])):
        t0 = time.perf_counter()
        res = study(fresh(tmp, name, cache_dir) + over + ["tracking.figures=none", *extra])
        results[name] = (res, time.perf_counter() - t0)
    (g, tg), (b, tb) = results["grid"], results["bisect"]
    rows = []
    for codec in g.codecs:
        eg, eb = g.codecs[codec], b.codecs.get(codec, {})
        both = bool(eg.get("bound") and eb.get("bound"))
        rows.append({"codec": codec, "grid_bound": eg.get("bound"), "grid_evaluations": eg.get("evaluations"),
                     "bisect_bound": eb.get("bound"), "bisect_evaluations": eb.get("evaluations"),
                     "bound_ratio": eb["bound"] / eg["bound"] if both else None,
                     "same_answer": (abs(math.log(eb["bound"] / eg["bound"])) <= SQRT2_STEP) if both
                     else eg.get("bound") == eb.get("bound")})
    return {"codecs": rows, "grid_wall_s": tg, "bisect_wall_s": tb,
            "grid_evaluations": sum(r["grid_evaluations"] or 0 for r in rows),
            "bisect_evaluations": sum(r["bisect_evaluations"] or 0 for r in rows)}


def measure_workers(tmp: Path, extra: Sequence[str] = (), *, grid: Sequence[float] = GRID[::2],
                    counts: Sequence[int] = (1, 2), cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """The same grid study with 1 and 2 worker processes (raw result primed first): wall
    time, points and speed-up over the first count."""
    study(fresh(tmp, "prime", cache_dir) + [*extra, "codec=[sz3]", "search=grid", "sweep.bounds=[8]",
                                            "sweep.baselines=[]", "tracking.enabled=false"])
    over = ["search=grid", f"sweep.bounds=[{','.join(map(str, grid))}]", "tracking.figures=none"]
    rows: list[dict[str, Any]] = []
    for n in counts:
        res = study(fresh(tmp, f"w{n}", cache_dir) + over + [f"sweep.workers={n}", *extra])
        rows.append({"workers": n, "points": len([p for p in res.points if not p.reused]),
                     "wall_s": res.wall_seconds})
    for row in rows:
        row["speed_up"] = rows[0]["wall_s"] / row["wall_s"]
    return rows


# -- the command line: one measurement, one table ----------------------------------------------
def overhead(tmp: Path, extra: list[str]) -> None:
    r = measure_overhead(tmp, extra)
    print(markdown_table(["study", "points", "wall s", "own work s", "framework s", "overhead %"],
                         [[r["study"], r["points"], r["wall_s"], r["work_s"], r["framework_s"], r["overhead_pct"]]]))
    print("own work = reading the dataset, raw result and evaluator references, and per point the codec round "
          "trip, reconstruction and evaluators; framework = everything else (MLflow, journal, thresholds, "
          "figures, codec warm-up).")
    print(f"framework_overhead_percent={r['overhead_pct']:.1f}")


def search(tmp: Path, extra: list[str]) -> None:
    r = measure_search(tmp, extra)
    print(markdown_table(
        ["codec", "grid threshold", "grid evaluations", "bisect threshold", "bisect evaluations", "ratio",
         "within one sqrt(2) step"],
        [[c["codec"], c["grid_bound"], c["grid_evaluations"], c["bisect_bound"], c["bisect_evaluations"],
          c["bound_ratio"], c["same_answer"]] for c in r["codecs"]]))
    n_g, n_b = r["grid_evaluations"], r["bisect_evaluations"]
    print(f"\nevaluations: grid {n_g}, bisect {n_b} ({n_b / max(n_g, 1):.2f} of the grid); "
          f"wall: grid {r['grid_wall_s']:.0f} s, bisect {r['bisect_wall_s']:.0f} s")


def workers(tmp: Path, extra: list[str]) -> None:
    rows = measure_workers(tmp, extra)
    print(markdown_table(["workers", "points", "wall s", "speed-up"],
                         [[r["workers"], r["points"], r["wall_s"], f"{r['speed_up']:.2f}x"] for r in rows]))


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
