"""Helpers shared by the benchmark scripts: the machine a run is on, timing, Markdown tables,
the project's Hydra config, single-thread pinning and simulated detector frames.

Not a test module: timings depend on the machine and its load.
"""
from __future__ import annotations

import dataclasses
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# A tiny tomography simulation (as tests/conftest.small_sim_overrides): smoke runs and tests.
TINY_TOMO = [
    "dataset.simulation.n_angles=120",
    "dataset.simulation.n_rows=8",
    "dataset.simulation.n_cols=96",
    "technique.pipeline.max_rows=4",
]


# -- data -------------------------------------------------------------------------------------
def make_frames(
    *, frames: int, ny: int, nx: int, background: float, peaks: int, seed: int
) -> np.ndarray:
    """Poisson counts: low smooth background plus bright Gaussian spots (Bragg-like), uint16."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ny, 0:nx]
    lam = background * (1.0 + 0.5 * np.sin(xx / (nx / 6.0)) * np.cos(yy / (ny / 5.0)))
    for _ in range(peaks):
        cy, cx = rng.uniform(0, ny), rng.uniform(0, nx)
        amp, width = rng.uniform(50, 2000), rng.uniform(1.0, 3.0)
        lam = lam + amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))
    return rng.poisson(lam, size=(frames, ny, nx)).astype(np.uint16)


# -- timing -----------------------------------------------------------------------------------
def seconds(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), wall seconds)``."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def median_time(fn: Callable[[], Any], repeats: int, *, warmup: int = 0) -> float:
    """Median wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return statistics.median(seconds(fn)[1] for _ in range(max(1, repeats)))


def paired_medians(fns: Mapping[str, Callable[[], Any]], repeats: int, *, warmup: int = 1) -> dict[str, float]:
    """Median wall seconds of each function, the functions interleaved repeat by repeat (in
    rotating order) so that a change of machine load hits every path alike."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(max(1, repeats)):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(seconds(fns[name])[1])
    return {name: statistics.median(t) for name, t in times.items()}


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest wall seconds of ``repeats`` calls of ``fn``."""
    return min(seconds(fn)[1] for _ in range(max(1, repeats)))


def single_thread():
    """One thread for everything a codec may parallelise (:func:`lossbound.codecs.timing.single_thread`)."""
    from lossbound.codecs.timing import single_thread as _single_thread

    return _single_thread()


# -- the project's config ------------------------------------------------------------------------
def compose(overrides: Sequence[str]):
    """The project's Hydra config composed as ``python -m evaluate <overrides>`` would."""
    from lossbound.cli.config import compose as _compose

    return _compose(overrides)


def resolved(cfg, key: str) -> dict[str, Any]:
    """One section of a composed config as plain, resolved containers."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg[key], resolve=True)


# -- the machine ---------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) * 1024 / 1e9, 1)
    except (OSError, ValueError):
        pass
    return None


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip().strip(chr(34))} ({platform.system()} {platform.release()})"
    except OSError:
        pass
    return platform.platform()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """CPU model, cores available to this process, RAM, OS, Python and library versions."""
    from lossbound.study.executor import available_cores
    from lossbound.study.study import library_versions

    return {
        "cpu_model": _cpu_model(),
        "cores_available": available_cores(),
        "cpu_count": os.cpu_count(),
        "ram_gb": _ram_gb(),
        "os": _os_name(),
        "python": platform.python_version(),
        "libraries": library_versions(),  # numpy, h5py, HDF5, hdf5plugin, pyFAI, algotom, scikit-image, tomopy, ...
        "load_average_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "code": _git_commit(),
    }


def machine_table(m: Mapping[str, Any]) -> str:
    """The machine block as a two-column Markdown table."""
    libs = ", ".join(f"{k} {v}" for k, v in (m.get("libraries") or {}).items())
    rows = [["CPU", m["cpu_model"]], ["cores available", f"{m['cores_available']} (of {m['cpu_count']})"],
            ["RAM", f"{m['ram_gb']} GB"], ["OS", m["os"]], ["Python", m["python"]], ["libraries", libs],
            ["load average at start", " ".join(map(str, m.get("load_average_start") or [])) or "-"],
            ["code", m.get("code") or "-"]]
    return markdown_table(["machine", ""], rows)


# -- results and tables --------------------------------------------------------------------------
@dataclasses.dataclass
class Target:
    """One target the issue sets: what, whether it is met (None: not judged) and the figures."""

    what: str
    met: bool | None
    detail: str = ""

    def line(self) -> str:
        verdict = {True: "met", False: "NOT met", None: "not judged"}[self.met]
        return f"target: {self.what} — {verdict}" + (f" ({self.detail})" if self.detail else "")


@dataclasses.dataclass
class Section:
    """One benchmark section's results: a table (``columns``: key, header), targets and notes."""

    name: str
    title: str
    columns: list[tuple[str, str]]
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    targets: list[Target] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def markdown(self, *, smoke: bool = False) -> str:
        out = [f"## {self.name}: {self.title}", ""]
        if self.rows:
            out.append(markdown_table([h for _, h in self.columns],
                                      [[row.get(k) for k, _ in self.columns] for row in self.rows]))
        if self.error:
            out.append(f"ERROR: {self.error}")
        out.append("")
        suffix = " [smoke sizes: not meaningful]" if smoke else ""
        out += [t.line() + suffix for t in self.targets] or ["target: none set by the issue"]
        out += [f"- {n}" for n in self.notes]
        out.append(f"({self.seconds:.1f} s)")
        return "\n".join(out)

    def as_json(self) -> dict[str, Any]:
        return {"title": self.title, "columns": [list(c) for c in self.columns], "rows": [plain(r) for r in self.rows],
                "targets": [dataclasses.asdict(t) for t in self.targets], "notes": self.notes,
                "seconds": self.seconds, "error": self.error}


def fmt(value: Any) -> str:
    """A table cell: 3 significant digits for small floats, none after the point for large ones."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf"
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (cells through :func:`fmt`, pipes escaped)."""
    def cell(v: Any) -> str:
        return fmt(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def plain(obj: Any) -> Any:
    """JSON-safe plain Python (numpy scalars -> numbers, tuples -> lists, NaN/inf -> None)."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` or None when either is missing or ``b`` is 0."""
    if a is None or b is None or b == 0:
        return None
    return float(a) / float(b)
