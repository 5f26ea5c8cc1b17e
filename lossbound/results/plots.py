"""Figures a reviewer would rather look at than read (saved as MLflow artifacts)."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lossbound.core.types import PointResult
from lossbound.criteria.tolerance import Tolerances


def log_scale(ax, axis: str, *, base: float = 10) -> None:
    """A log ``axis`` ("x" or "y") where the axes already hold a positive value along it in
    data coordinates (lines, markers on a blended transform, reference lines); otherwise the
    axis stays linear: matplotlib cannot draw a log axis over no data, and a panel whose
    criterion has no value at any point must still draw."""
    if math.isfinite(ax.dataLim.minposx if axis == "x" else ax.dataLim.minposy):
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log", base=base)


def panel_grid(n: int, *, ncols: int, size: tuple[float, float]) -> tuple[Figure, list]:
    """A figure of ``n`` panels, ``ncols`` per row, each ``size`` inches (unused ones hidden by
    the caller). Fixed margins: constrained layout would double the drawing time."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    w, h = size
    fig = Figure(figsize=(w * ncols, h * nrows))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.3 / w, right=0.98, top=1 - 0.55 / (h * nrows), bottom=0.45 / (h * nrows),
                        hspace=0.5, wspace=0.3)
    return fig, list(fig.subplots(nrows, ncols, squeeze=False).ravel())


def sweep_figure(points: Iterable[PointResult], tolerances: Tolerances, *, title: str = "") -> Figure:
    """Each tolerance metric and the compression ratio against the codec value, per codec.

    Tolerance limits are drawn as dashed lines; points outside tolerance are ringed; failed
    points (crash) are marked with x at the bottom of each panel. Axes are logarithmic where
    the data allow it, so a study in which every point failed still draws what exists.
    """
    curves: dict[str, list[PointResult]] = defaultdict(list)
    for p in points:
        if p.lossy and p.value is not None:
            curves[" ".join(str(x) for x in p.group if x not in (None, ""))].append(p)
    per_frame = {c.metric for c in tolerances if c.kind == "frames"}
    panels = ["compression ratio"] + [c.metric for c in tolerances]
    fig, axes = panel_grid(len(panels), ncols=3, size=(4.6, 3.4))

    def y_of(p: PointResult, panel: str) -> float | None:
        if panel == "compression ratio":
            return p.codec.get("ratio")
        # a per-frame criterion: the frames' damage over their own allowance (<= 1 inside)
        return p.uses.get(panel) if panel in per_frame else p.metrics.get(panel)

    for ax, panel in zip(axes, panels):
        for i, (name, pts) in enumerate(sorted(curves.items())):
            color = f"C{i % 10}"  # explicit: marker-only plots below must not advance the cycle
            pts = sorted(pts, key=lambda p: p.value)
            ok = [p for p in pts if p.status == "ok"]
            ys = [y_of(p, panel) for p in ok]
            ys = [float("nan") if y is None else float(y) for y in ys]
            ax.plot([p.value for p in ok], ys, "o-", label=name, ms=4, color=color)
            for p in pts:
                if p.status != "ok":
                    ax.plot([p.value], [0.0], "x", color=color, ms=8, transform=ax.get_xaxis_transform())
                elif not p.passed and y_of(p, panel) is not None:
                    ax.plot([p.value], [y_of(p, panel)], "o", mfc="none", mec="k", ms=9)
        crit = next((c for c in tolerances if c.metric == panel), None)
        limits = (None, 1.0) if panel in per_frame else ((crit.min, crit.max) if crit else ())
        for lim in limits:
            if lim is not None:
                ax.axhline(lim, ls="--", color="k", lw=1)
        log_scale(ax, "x", base=2)
        if panel == "compression ratio":
            log_scale(ax, "y")
        ax.set_xlabel("codec value (error bound in detector units for 'absolute')")
        ax.set_title(f"{panel}: damage / own allowance" if panel in per_frame else panel, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if curves:
        axes[0].legend(fontsize=8)
    else:
        axes[0].text(0.5, 0.5, "no lossy point evaluated", ha="center", va="center", transform=axes[0].transAxes)
    fig.suptitle(title + "   (ringed: outside tolerance; x: failed point; dashed: limit)", fontsize=10)
    return fig
