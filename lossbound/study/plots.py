"""Figures a reviewer would rather look at than read (saved as MLflow artifacts)."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable

from matplotlib.figure import Figure

from lossbound.core.types import PointResult
from lossbound.study.tolerance import Tolerances


def sweep_figure(points: Iterable[PointResult], tolerances: Tolerances, *, title: str = "") -> Figure:
    """Each tolerance metric and the compression ratio against the error bound, per codec.

    Tolerance limits are drawn as dashed lines; failed points (crash) are marked with x on
    the ratio panel's axis.
    """
    curves: dict[str, list[PointResult]] = defaultdict(list)
    for p in points:
        if p.lossy:
            curves[" ".join(str(x) for x in p.group if x not in (None, ""))].append(p)
    panels = ["compression ratio"] + [c.metric for c in tolerances]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        for i, (name, pts) in enumerate(sorted(curves.items())):
            color = f"C{i % 10}"  # explicit: marker-only plots below must not advance the cycle
            pts = sorted(pts, key=lambda p: p.value)
            ok = [p for p in pts if p.status == "ok"]
            xs = [p.value for p in ok]
            ys = [p.codec.get("ratio") if panel == "compression ratio" else p.metrics.get(panel) for p in ok]
            ys = [float("nan") if y is None else y for y in ys]
            ax.plot(xs, ys, "o-", label=name, ms=4, color=color)
            for p in pts:
                if p.status != "ok":
                    ax.plot([p.value], [0.0], "x", color=color, ms=8, transform=ax.get_xaxis_transform())
                elif not p.passed:
                    y = p.codec.get("ratio") if panel == "compression ratio" else p.metrics.get(panel)
                    if y is not None:
                        ax.plot([p.value], [y], "o", mfc="none", mec="k", ms=9)
        crit = next((c for c in tolerances if c.metric == panel), None)
        for lim in (crit.min, crit.max) if crit else ():
            if lim is not None:
                ax.axhline(lim, ls="--", color="k", lw=1)
        ax.set_xscale("log", base=2)
        if panel == "compression ratio":
            ax.set_yscale("log")
        ax.set_xlabel("error bound (detector units)")
        ax.set_title(panel, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    fig.suptitle(title + "   (ringed: outside tolerance; x: failed point; dashed: limit)", fontsize=10)
    return fig
