"""The expert report: ``runs/reports/<technique>.html``, one self-contained page (images
embedded) that a beamline scientist can read, defend and sign off.

It is drawn from what a study leaves behind — the thresholds file and the journal of points —
so it can be rebuilt at any time (``lossbound report <technique>``), e.g. after a
sign-off. Sections: the recommendation, thresholds per dataset and their conservative
combination (limiting dataset named, review status), the tolerances with their counting-noise
reference, per codec each criterion against the bound (tolerance band and threshold marked)
and the ratio against the bound, the ratio-versus-quality front across codecs, acquisition
feasibility (cores for 16 GB/s and the configured detector rate), and how much is gained
against the lossless baseline and the ratio the community needs, across techniques.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping

import jinja2
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lossbound.core.errors import InputError
from lossbound.core.files import atomic_write_text
from lossbound.core.png import png_data_uri
from lossbound.core.types import PointResult
from lossbound.results.export import codec_config
from lossbound.results.journal import Journal
from lossbound.results.plots import log_scale, panel_grid
from lossbound.results.signoff import load_document
from lossbound.results.thresholds import curve_names, entry_feasibility, grows_with_value
from lossbound.criteria.tolerance import Tolerances

log = logging.getLogger(__name__)

__all__ = ["TechniqueRecord", "criterion_use", "gain_rows", "load_record", "render_report", "write_report"]


@dataclasses.dataclass
class TechniqueRecord:
    """One technique's thresholds file and, per dataset, its recorded points."""

    name: str
    doc: dict[str, Any]
    points: dict[str, list[PointResult]]
    path: Path | None = None  # the thresholds file
    _curves: dict[str, dict[str, list[PointResult]]] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def needed_ratio(self) -> float:
        return float(self.doc.get("needed_ratio") or 10.0)

    def curves(self, dataset: str) -> dict[str, list[PointResult]]:
        """Codec name (as in the thresholds file) -> this dataset's lossy points, by value
        (grouped once per dataset: every table and figure asks)."""
        if dataset not in self._curves:
            by_group: dict[tuple, list[PointResult]] = defaultdict(list)
            for p in self.points.get(dataset, []):
                if p.lossy and p.value is not None:
                    by_group[p.group].append(p)
            self._curves[dataset] = {name: sorted(by_group[g], key=lambda p: p.value)
                                     for g, name in curve_names(by_group).items()}
        return self._curves[dataset]


def load_record(thresholds_path: Path, journal_dir: Path | None) -> TechniqueRecord:
    """A technique's record from its thresholds file and journal (points of the contexts the
    thresholds file names; a journal that is gone leaves the tables and no curves)."""
    doc = load_document(thresholds_path)
    name = str(doc.get("technique") or Path(thresholds_path).stem)
    journal = Journal(Path(journal_dir) / f"{name}.jsonl" if journal_dir else None).read()
    points: dict[str, list[PointResult]] = {}
    for ds, entry in (doc.get("datasets") or {}).items():
        ctx = entry.get("context")
        points[ds] = [p for p in journal.values() if p.dataset == ds and (ctx is None or p.context == ctx)]
    return TechniqueRecord(name, doc, points, path=Path(thresholds_path))


# -- numbers -----------------------------------------------------------------------------------
def criterion_use(value: float | None, *, ideal: float | None, lo: float | None, hi: float | None) -> float:
    """How much of a criterion's allowance a value uses: ``|value - ideal| / |limit - ideal|``
    on the side it moved to (0: as raw, 1: at the limit, > 1: outside). NaN if undefined."""
    if value is None or ideal is None or not (math.isfinite(value) and math.isfinite(ideal)):
        return math.nan
    limit = hi if value >= ideal else lo
    if limit is None:
        return 0.0
    allowed = abs(limit - ideal)
    if allowed == 0:
        return 0.0 if value == ideal else math.inf
    return abs(value - ideal) / allowed


def recorded_tolerances(entry: Mapping[str, Any]):
    """The criteria a thresholds entry recorded (with every number they had on that dataset),
    or None for an entry written before they were recorded."""
    records = entry.get("criteria_record")
    return Tolerances.from_records(records) if records else None


def point_uses(point: PointResult, entry: Mapping[str, Any]) -> dict[str, float]:
    """Each criterion's use of its allowance at ``point`` (1 = at the tolerance): judged again
    with the criteria the entry recorded; per-frame criteria give the frames' order statistic
    their rule looks at."""
    tol = recorded_tolerances(entry)
    if tol is not None:
        return tol.uses(point.metrics, point.frame_metrics)
    ideal, limits = entry.get("ideal") or {}, entry.get("limits") or {}
    return {m: criterion_use(point.metrics.get(m), ideal=ideal.get(m), lo=lim.get("min"), hi=lim.get("max"))
            for m, lim in limits.items()}


def worst_use(point: PointResult, entry: Mapping[str, Any]) -> float:
    """The largest criterion use over a dataset's criteria (the point's quality)."""
    uses = [u for u in point_uses(point, entry).values() if not math.isnan(u)]
    return max(uses) if uses else math.nan


def ratio_at(points: Iterable[PointResult], bound: float | None, *, grows: bool = True) -> float | None:
    """Compression ratio of the most lossy tested value that is no more lossy than ``bound``
    (the conservative ratio where ``bound`` itself was not tested on this dataset)."""
    if bound is None:
        return None
    ok = [p for p in points if p.status == "ok" and p.value is not None
          and (p.value <= bound if grows else p.value >= bound)]
    if not ok:
        return None
    best = max(ok, key=lambda p: p.value if grows else -p.value)
    return best.codec.get("ratio")


def conservative_ratios(rec: TechniqueRecord, codec: str) -> dict[str, float | None]:
    """Per dataset: the ratio at the codec's combined (conservative) bound."""
    combined = (rec.doc.get("codecs") or {}).get(codec) or {}
    grows = grows_with_value(combined["codec"], combined.get("mode")) if combined.get("codec") else True
    return {ds: ratio_at(rec.curves(ds).get(codec, []), combined.get("bound"), grows=grows)
            for ds in (combined.get("per_dataset") or {})}


def worst_ratio(rec: TechniqueRecord, codec: str) -> float | None:
    """The lowest ratio any combined dataset gets at the codec's combined bound; None when a
    dataset has no measurement at or below that bound (its ratio there is unknown)."""
    ratios = list(conservative_ratios(rec, codec).values())
    return min(ratios) if ratios and None not in ratios else None


def recommended(rec: TechniqueRecord) -> tuple[str | None, float | None]:
    """The codec with the highest worst-case ratio at its combined bound (known on every
    dataset it combines), not rejected."""
    best, best_ratio = None, None
    for codec, entry in (rec.doc.get("codecs") or {}).items():
        if entry.get("bound") is None or (entry.get("review") or {}).get("status") == "rejected":
            continue
        worst = worst_ratio(rec, codec)
        if worst is not None and (best_ratio is None or worst > best_ratio):
            best, best_ratio = codec, worst
    return best, best_ratio


def gain_rows(records: Iterable[TechniqueRecord]) -> list[dict[str, Any]]:
    """How much do we gain: per technique and dataset, the best ratio at an acceptable bound
    next to the best lossless ratio and the ratio the community needs; plus, per technique,
    the recommended codec's worst-case ratio over its datasets at the conservative bound."""
    rows = []
    for rec in records:
        codec, worst = recommended(rec)
        lossless_all = []
        datasets = rec.doc.get("datasets") or {}
        shown = set(limiting_datasets(rec.doc)) if len(datasets) > MANY_DATASETS else set(datasets)
        for ds, entry in sorted(datasets.items()):
            lossless = max(((b.get("compression_ratio") or 0.0, name) for name, b in (entry.get("baselines") or {}).items()
                            if b.get("compression_ratio")), default=(None, None))
            rejected = {c for c, e in (rec.doc.get("codecs") or {}).items()
                        if (e.get("review") or {}).get("status") == "rejected"}
            lossy = max(((e.get("compression_ratio") or 0.0, name) for name, e in (entry.get("codecs") or {}).items()
                         if e.get("bound") is not None and e.get("compression_ratio") and name not in rejected),
                        default=(None, None))
            lossless_all.append(lossless[0])
            if ds not in shown:  # many datasets: the limiting ones stand for the others
                continue
            rows.append({"technique": rec.name, "dataset": ds, "lossless": lossless[0], "lossless_codec": lossless[1],
                         "lossy": lossy[0], "lossy_codec": lossy[1], "needed": rec.needed_ratio})
        lossless_min = min((v for v in lossless_all if v is not None), default=None)
        rows.append({"technique": rec.name, "dataset": "all (conservative)", "lossless": lossless_min,
                     "lossless_codec": "worst dataset", "lossy": worst, "lossy_codec": codec, "needed": rec.needed_ratio})
    return rows


# -- figures -----------------------------------------------------------------------------------
def codec_figure(rec: TechniqueRecord, codec: str) -> Figure:
    """Each criterion and the ratio against the bound, one line per dataset: its tolerance
    band shaded, its threshold dotted, the combined threshold solid black."""
    datasets = rec.doc.get("datasets") or {}
    metrics = sorted({m for d in datasets.values() for m in (d.get("limits") or {})})
    panels = metrics + ["compression ratio"]
    fig, axes = panel_grid(len(panels), ncols=4, size=(4.0, 2.9))
    combined = ((rec.doc.get("codecs") or {}).get(codec) or {}).get("bound")
    many = len(datasets) > MANY_DATASETS  # one colour per group, thin lines, no per-dataset bands
    group_colour = {g: f"C{i % 10}" for i, g in enumerate(sorted({_group(e) for e in datasets.values()}))}
    for ax, panel in zip(axes, panels):
        for i, (ds, entry) in enumerate(sorted(datasets.items())):
            color = group_colour[_group(entry)] if many else f"C{i % 10}"
            pts = [p for p in rec.curves(ds).get(codec, []) if p.status == "ok"]
            frames = ((entry.get("limits") or {}).get(panel) or {}).get("kind") == "frames"
            vals = [p.codec.get("ratio") if panel == "compression ratio" else
                    point_uses(p, entry).get(panel) if frames else p.metrics.get(panel) for p in pts]
            ys = [math.nan if v is None else float(v) for v in vals]
            ax.plot([p.value for p in pts], ys, "o-", ms=2.5 if many else 3.5, lw=0.7 if many else 1.5,
                    color=color, label=None if many else ds)
            bad = [(p.value, y) for p, y in zip(pts, ys) if not p.passed and math.isfinite(y)]
            if bad:
                ax.plot(*zip(*bad), "o", mfc="none", mec="k", ms=8)
            for p in rec.curves(ds).get(codec, []):
                if p.status != "ok":
                    ax.plot([p.value], [0.02], "x", color=color, ms=8, transform=ax.get_xaxis_transform())
            lim = (entry.get("limits") or {}).get(panel)
            if lim and not many:
                lo, hi = lim.get("min"), lim.get("max")
                ax.axhspan(-1e300 if lo is None else lo, 1e300 if hi is None else hi, color=color, alpha=0.08, lw=0)
                for v in (lo, hi):
                    if v is not None:
                        ax.axhline(v, ls="--", color=color, lw=0.8)
            own_entry = (entry.get("codecs") or {}).get(codec) or {}
            own = own_entry.get("bound")
            if own is not None and not many:
                ax.axvline(own, ls=":", color=color, lw=1.2)
                lo, hi = (own_entry.get("bound_range") or [None, None])[:2]
                if lo is not None and hi is not None and hi > lo:  # where its limiting criterion crosses, +-1 SE
                    ax.axvspan(lo, hi, color=color, alpha=0.12, lw=0)
        if combined is not None:
            ax.axvline(combined, color="k", lw=1.5)
        log_scale(ax, "x", base=2)
        if panel == "compression ratio":
            log_scale(ax, "y")
        limits = [v for d in datasets.values() for k in ("min", "max")
                  if (v := ((d.get("limits") or {}).get(panel) or {}).get(k)) is not None]
        _autoscale_to_data(ax, also=limits)
        ax.minorticks_off()  # minor tick labels of log axes are most of the drawing time
        ax.set_title(panel, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if many:
        for g, c in group_colour.items():
            axes[0].plot([], [], "o-", color=c, label=f"group {g}")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{rec.name} · {codec}: criterion vs bound (band: tolerance; dotted: the dataset's threshold, its "
                 f"range shaded; black: combined threshold; ringed: outside tolerance; x: failed)", fontsize=9)
    return fig


def _autoscale_to_data(ax, *, also: Iterable[float] = ()) -> None:
    """Axis limits from the plotted points and the tolerance limits ``also`` (the shaded bands
    reach to +-1e300, so matplotlib's own autoscaling would show nothing)."""
    ys = [float(y) for line in ax.get_lines() if line.get_transform() == ax.transData
          for y in line.get_ydata() if isinstance(y, (int, float)) and math.isfinite(y)]
    ys += [float(v) for v in also if math.isfinite(v)]
    if ys:
        lo, hi = min(ys), max(ys)
        if ax.get_yscale() == "log":
            lo, hi = max(lo, 1e-12) / 1.3, max(hi, 1e-12) * 1.3
        else:
            pad = 0.15 * (hi - lo) or 0.1 * max(abs(hi), 1e-9)
            lo, hi = lo - pad, hi + pad
        ax.set_ylim(lo, hi)


def front_figure(rec: TechniqueRecord) -> Figure:
    """Ratio against the worst criterion use (quality), every codec, one panel per dataset:
    points under 1 are inside every tolerance; each codec's threshold starred; lossless
    baselines as vertical lines."""
    datasets = sorted((rec.doc.get("datasets") or {}).items())
    if len(datasets) > MANY_DATASETS:  # a panel per dataset would not be read: the limiting ones
        limiting = limiting_datasets(rec.doc)
        datasets = [(n, e) for n, e in datasets if n in limiting][:MANY_DATASETS]
    fig, axes = panel_grid(max(1, len(datasets)), ncols=2, size=(6.2, 4.0))
    for ax, (ds, entry) in zip(axes, datasets):
        for i, (codec, pts) in enumerate(sorted(rec.curves(ds).items())):
            ok = [p for p in pts if p.status == "ok" and p.codec.get("ratio")]
            xy = sorted((p.codec["ratio"], worst_use(p, entry)) for p in ok)
            xy = [(x, max(y, 1e-4)) for x, y in xy if math.isfinite(y)]
            if not xy:
                continue
            ax.plot(*zip(*xy), "o-", ms=3.5, color=f"C{i % 10}", label=codec)
            own = ((entry.get("codecs") or {}).get(codec) or {})
            if own.get("bound") is not None and own.get("compression_ratio"):
                at = next((p for p in ok if p.value == own["bound"]), None)
                if at is not None and math.isfinite(u := worst_use(at, entry)):
                    ax.plot([own["compression_ratio"]], [max(u, 1e-4)], "*", ms=14, color=f"C{i % 10}", mec="k")
        for name, b in (entry.get("baselines") or {}).items():
            if b.get("compression_ratio"):
                ax.axvline(b["compression_ratio"], color="0.5", ls=":", lw=1)
                ax.text(b["compression_ratio"], 1.0, f" {name}", rotation=90, fontsize=7, va="top", color="0.4",
                        transform=ax.get_xaxis_transform())
        ax.axhline(1.0, color="k", ls="--", lw=1)
        ax.axvline(rec.needed_ratio, color="tab:red", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("compression ratio (red: needed)")
        ax.set_ylabel("worst criterion use (1 = at a tolerance)")
        ax.set_title(ds, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no lossy point evaluated", ha="center", va="center", transform=ax.transAxes)
    for ax in axes[len(datasets):]:
        ax.set_visible(False)
    fig.suptitle(f"{rec.name}: ratio-versus-quality front (lower right is better; star: threshold)", fontsize=10)
    return fig


#: above this many datasets the report shows groups and spreads, not one column or panel each
MANY_DATASETS = 6


def _group(entry: Mapping[str, Any]) -> str:
    return str((entry.get("dataset") or {}).get("group") or "ungrouped")


def limiting_datasets(doc: Mapping[str, Any]) -> list[str]:
    """The datasets that limit a codec's threshold, overall or in a group (first seen first)."""
    out: list[str] = []
    sections = [doc.get("codecs") or {}] + [g.get("codecs") or {} for g in (doc.get("groups") or {}).values()]
    for codecs in sections:
        for e in codecs.values():
            if (n := e.get("limiting_dataset")) and n not in out:
                out.append(n)
    return out


def spread_figure(rec: TechniqueRecord) -> Figure:
    """Per codec (columns): each dataset's own threshold (top) and its ratio there (bottom),
    a strip per group with its box; the dataset limiting each group ringed and named, the
    overall bound a black line; datasets where nothing passed drawn as x at the bottom."""
    doc = rec.doc
    datasets = doc.get("datasets") or {}
    codecs = [c for c in (doc.get("codecs") or {})]
    groups = sorted({_group(e) for e in datasets.values()})
    width = max(3.4, 7.0 / max(1, len(codecs)), 0.6 * len(groups) + 1.0)
    fig, axes = panel_grid(2 * max(1, len(codecs)), ncols=max(1, len(codecs)), size=(width, 3.0))
    ncol = max(1, len(codecs))
    for j, codec in enumerate(codecs):
        for row, key in enumerate(("bound", "compression_ratio")):
            ax = axes[row * ncol + j]
            logged = False  # a log axis needs a positive value in data coordinates
            for gi, g in enumerate(groups):
                names = sorted(n for n, e in datasets.items() if _group(e) == g)
                vals = [((datasets[n].get("codecs") or {}).get(codec) or {}).get(key) for n in names]
                measured = [(n, v) for n, v in zip(names, vals) if codec in (datasets[n].get("codecs") or {})]
                ys = [float(v) for _, v in measured if v is not None and v > 0]
                logged |= bool(ys)
                jitter = [gi + 0.25 * math.sin(7.3 * k) for k in range(len(ys))]
                ax.plot(jitter, ys, "o", ms=4, alpha=0.75, color=f"C{gi % 10}")
                if len(ys) >= 4:
                    ax.boxplot([ys], positions=[gi], widths=0.6, showfliers=False, manage_ticks=False,
                               medianprops={"color": "k"}, boxprops={"color": "0.4"},
                               whiskerprops={"color": "0.4"}, capprops={"color": "0.4"})
                nones = sum(1 for _, v in measured if v is None)
                if nones:
                    ax.plot([gi] * nones, [0.03] * nones, "x", color=f"C{gi % 10}", ms=7,
                            transform=ax.get_xaxis_transform())
                lim = (((doc.get("groups") or {}).get(g) or {}).get("codecs") or {}).get(codec) or {}
                lim_name = lim.get("limiting_dataset") or (((doc.get("codecs") or {}).get(codec) or {})
                                                          .get("limiting_dataset") if len(groups) == 1 else None)
                v = ((datasets.get(lim_name) or {}).get("codecs") or {}).get(codec, {}).get(key) if lim_name else None
                if v is not None and v > 0:
                    ax.plot([gi], [v], "o", mfc="none", mec="k", ms=10)
                    ax.annotate(lim_name, (gi, v), fontsize=6, xytext=(6, -9), textcoords="offset points")
            overall = ((doc.get("codecs") or {}).get(codec) or {}).get("bound")
            if row == 0 and overall is not None:
                ax.axhline(overall, color="k", lw=1)
            ax.set_xticks(range(len(groups)), groups, fontsize=7, rotation=20 if len(groups) > 3 else 0)
            ax.set_xlim(-0.6, len(groups) - 0.4)
            if logged:
                ax.set_yscale("log")
            else:
                ax.set_yticks([])
                ax.text(0.5, 0.5, "nothing passed", ha="center", va="center", fontsize=8, transform=ax.transAxes)
            ax.minorticks_off()
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3, axis="y")
            ax.set_title(f"{codec}: {'threshold' if row == 0 else 'ratio at threshold'}", fontsize=9)
    fig.suptitle(f"{rec.name}: each dataset's threshold and ratio, by group ({len(datasets)} datasets)", fontsize=9)
    return fig


def gain_figure(rows: list[dict[str, Any]]) -> Figure:
    """Lossless, lossy-at-the-acceptable-bound and needed ratios, per technique and dataset."""
    fig = Figure(figsize=(max(7.0, 1.1 * len(rows) + 2), 4.4))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.86, bottom=0.18)
    ax = fig.subplots()
    x = list(range(len(rows)))
    w = 0.38
    ax.bar([i - w / 2 for i in x], [r["lossless"] or 0 for r in rows], w, label="best lossless", color="0.6")
    ax.bar([i + w / 2 for i in x], [r["lossy"] or 0 for r in rows], w, label="lossy at the acceptable bound",
           color="tab:blue")
    ax.plot(x, [r["needed"] for r in rows], "_", ms=28, mew=2.5, color="tab:red", label="needed")
    ax.set_xticks(x, [f"{r['technique']}\n{r['dataset']}" for r in rows], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("compression ratio")
    ax.grid(alpha=0.3, axis="y", which="both")
    ax.legend(fontsize=8)
    ax.set_title("How much do we gain\n('all': the worst dataset at the conservative bound)", fontsize=10)
    return fig


# -- html --------------------------------------------------------------------------------------
_CSS = """body{font-family:sans-serif;margin:1.5em 2.5em;color:#222;max-width:1500px}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:left}th{background:#f0f0f0}td.num{text-align:right}img{max-width:100%;border:1px solid #ddd;margin:.3em 0}
.approved{color:#1a7f37;font-weight:bold}.rejected{color:#b3261e;font-weight:bold}.stale{color:#b76e00;
font-weight:bold}.unreviewed{color:#777}pre{background:#f6f6f6;padding:.6em;font-size:12px;overflow:auto}
.note{color:#555;font-size:13px}"""

_GATE_CLASS = {"passed": "approved", "warning": "stale", "refused": "rejected"}


def _fmt(v: Any, digits: int = 4) -> str:
    """A cell's text (the template escapes it)."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "—" if math.isnan(v) else f"{v:.{digits}g}"
    return str(v)


@functools.lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("lossbound.results", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = _fmt
    return env.get_template("report.html.j2")


def _bound_cell(per: Mapping[str, Any]) -> str:
    """``bound [lo–hi] (ratio×)``, flagged when unconfirmed."""
    rng = per.get("bound_range") or [None, None]
    text = _fmt(per.get("bound"))
    if per.get("bound") is not None and rng:
        text += f" [{_fmt(rng[0]) if rng[0] is not None else '<'}–{_fmt(rng[1]) if rng[1] is not None else '>'}]"
    text += f" ({_fmt(per.get('compression_ratio'), 3)}×)"
    if per.get("bound") is not None and not per.get("confirmed"):
        text += " unconfirmed"
    return text


def _tolerance_section(ds: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """One dataset's tolerances beside its counting-noise reference."""
    noise = entry.get("noise_reference") or {}
    tol = entry.get("tolerances") or {}
    checks = noise.get("checks") or {}
    out: dict[str, Any] = {"name": ds, "check": checks.get("warning") or checks.get("note") or "",
                           "noise": None, "unavailable": str(noise.get("unavailable"))}
    if "model" in noise:
        policy = noise.get("policy") or {}
        out["noise"] = {"resamples": noise["resamples"], "model": noise["model"],
                        "first": policy.get("resamples", "?"), "target_se": policy.get("target_se"),
                        "max": policy.get("max_resamples", "?"), "seconds": noise.get("seconds")}
    limits = noise.get("limits") or {}
    rows = []
    for metric, lim in (entry.get("limits") or {}).items():
        spec = tol.get(metric) or {}
        nl = limits.get(metric) or {}
        fixed = " and ".join(f"{k} {spec[k]:g}" for k in ("min", "max") if k in spec) or "—"
        eff = (noise.get("effects") or {}).get(metric) or {}
        if "frames_judged" in nl:
            effect = (f"per frame: median {_fmt(nl.get('noise_effect'), 3)} "
                      f"({_fmt(nl.get('noise_effect_min'), 2)}–{_fmt(nl.get('noise_effect_max'), 2)}), "
                      f"{nl.get('frames_noise')} of {nl.get('frames_judged')} frames"
                      + (f"; fixed for the others: {nl['fixed_used']}" if nl.get("fixed_used") else ""))
        else:
            effect = (f"{_fmt(nl['noise_effect'], 3)} ± {_fmt(nl.get('noise_effect_se'), 2)}"
                      if nl.get("noise_effect") is not None
                      else f"{_fmt(eff['effect'], 3)} ± {_fmt(eff.get('se'), 2)} (not used: "
                           f"{nl.get('fixed_used', 'fixed criterion')})" if "effect" in eff
                      else nl.get("fixed_used", "—"))
        if lim.get("kind") == "frames":
            used = f"each frame within its own allowance, ≥ {_fmt(spec.get('frames', 1.0) * 100, 3)} % of frames"
        else:
            used = " and ".join(f"{k} {_fmt(lim[k])}" for k in ("min", "max") if lim.get(k) is not None)
        factor = spec.get("noise")
        if factor is not None and nl.get("power") not in (None, 1):
            factor = f"{float(factor):g}^{float(nl['power']):g}"   # quadratic or measured power
        rows.append([metric, fixed, factor, str(effect), used, (entry.get("ideal") or {}).get(metric)])
    out["rows"] = rows
    return out


def render_report(rec: TechniqueRecord, *, others: Iterable[TechniqueRecord] = ()) -> str:
    """The report of ``rec`` as one HTML string (``others``: the other techniques, for the
    gain table and plot), from the template ``templates/report.html.j2``."""
    doc = rec.doc
    datasets = doc.get("datasets") or {}
    codecs = doc.get("codecs") or {}
    acq = doc.get("acquisition") or {}
    names = sorted(datasets)

    best, worst = recommended(rec)
    recommendation = None
    if best is not None:
        entry = codecs[best]
        recommendation = {"codec": best, "bound": entry.get("bound"), "limiting": entry.get("limiting_dataset"),
                          "worst": worst, "review": entry.get("review"),
                          "config": yaml.safe_dump(codec_config(entry), sort_keys=False, default_flow_style=None,
                                                   width=110)}
    # quality gates: how well each dataset's raw data fit its declared setup
    gates, gates_passed = [], 0
    for ds in names:
        for gname, g in (datasets[ds].get("gates") or {}).items():
            status = str(g.get("status"))
            limit = g.get("limit")
            limit = "–".join(_fmt(v) for v in limit) if isinstance(limit, list) else limit
            if status == "passed" and len(names) > MANY_DATASETS:  # many datasets: what needs a look
                gates_passed += 1
                continue
            gates.append([ds, gname, {"gate": status, "cls": _GATE_CLASS.get(status, "unreviewed")},
                          g.get("value"), limit, g.get("unit", ""), g.get("action"),
                          str(g.get("detail", "")) + (f" — {g['fix']}" if g.get("fix") else "")])
    many = len(names) > MANY_DATASETS
    thresholds = []
    for codec, entry in codecs.items():
        per = entry.get("per_dataset") or {}
        cells = [] if many else [_bound_cell(per[d]) if d in per else "—" for d in names]
        limiting = entry.get("limiting_dataset")
        if entry.get("limiting_group"):
            limiting = f"{limiting} (group {entry['limiting_group']})"
        thresholds.append([codec, *cells, entry.get("bound"), "yes" if entry.get("confirmed") else "no",
                           limiting, worst_ratio(rec, codec), {"review": entry.get("review")}])
    # groups (sample types): each group's bound, its limiting dataset and its own review
    group_rows = []
    for g, section in (doc.get("groups") or {}).items():
        for codec, entry in (section.get("codecs") or {}).items():
            group_rows.append([g, len(section.get("datasets") or []), codec, entry.get("bound"),
                               "yes" if entry.get("confirmed") else "no", entry.get("limiting_dataset"),
                               {"review": entry.get("review")}])
    # per dataset: one row each (a column each would not fit many datasets)
    dataset_rows = [[d, _group(datasets[d]), *[_bound_cell(((datasets[d].get("codecs") or {}).get(c)) or {})
                                                if c in (datasets[d].get("codecs") or {}) else "—" for c in codecs]]
                    for d in names] if many else []
    excluded = [[n, codec, why] for codec, entry in codecs.items()
                for n, why in sorted((entry.get("excluded_datasets") or {}).items())]
    excluded += [[n, "all", f"failed: {f.get('reason')}"] for n, f in sorted((doc.get("failed_datasets") or {}).items())]
    # feasibility: cores at the rates this report names (a dataset's entry may hold an older study's)
    rates = {k.replace("_gbps", ""): v for k, v in acq.items()}
    feasible = []
    for ds in names:
        entry = datasets[ds]
        for kind, group in (("lossy", entry.get("codecs") or {}), ("lossless", entry.get("baselines") or {})):
            for codec, e in group.items():
                if kind == "lossy" and e.get("bound") is None:
                    continue
                f = entry_feasibility(e, rates) or {}
                feasible.append([ds, codec, e.get("bound") if kind == "lossy" else "lossless",
                                 e.get("compression_ratio"), f.get("compress_mbps_single_core"),
                                 f.get("cores_for_peak"), f.get("cores_for_detector"),
                                 f.get("decompress_mbps_single_core"), f.get("decompress_cores_for_peak"),
                                 f.get("source")])
    rows = gain_rows([rec, *others])
    gain = [[r["technique"], r["dataset"], r["lossless"], r["lossless_codec"], r["lossy"], r["lossy_codec"],
             r["needed"], "yes" if (r["lossy"] or 0) >= r["needed"] else "no"] for r in rows]
    figures = [{"codec": codec, "src": png_data_uri(codec_figure(rec, codec))} for codec in codecs
               if any(rec.curves(ds).get(codec) for ds in names)]
    return _template().render(
        name=rec.name, css=_CSS, path=str(rec.path or f"runs/thresholds/{rec.name}.yaml"), generated=str(doc.get("generated", "?")),
        rebuilt=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), rule=str(doc.get("rule", "")),
        recommendation=recommendation, gates=gates, gates_passed=gates_passed, many=many, n_datasets=len(names),
        n_groups=len(doc.get("groups") or {}),
        threshold_headers=["codec", *([] if many else [f"{d} bound [range] (ratio)" for d in names]),
                           "combined bound", "confirmed", "limiting dataset", "ratio at combined (worst)", "review"],
        threshold_rows=thresholds, group_rows=group_rows, excluded=excluded,
        dataset_headers=["dataset", "group", *[f"{c} bound [range] (ratio)" for c in codecs]], dataset_rows=dataset_rows,
        spread=png_data_uri(spread_figure(rec)) if (many or doc.get("groups")) and codecs else None, tolerance_sections=[_tolerance_section(ds, datasets[ds]) for ds in names],
        codec_figures=figures, front=png_data_uri(front_figure(rec)),
        rates=", ".join(f"{k} {v:g} GB/s" for k, v in rates.items()), feasibility=feasible, gain=gain,
        gain_figure=png_data_uri(gain_figure(rows)))


def write_report(thresholds_path: Path, *, journal_dir: Path | None, reports_dir: Path) -> Path:
    """Render ``reports_dir/<technique>.html`` from a thresholds file (other techniques'
    files in the same folder feed the gain section)."""
    thresholds_path = Path(thresholds_path)
    rec = load_record(thresholds_path, journal_dir)
    others = []
    for path in sorted(thresholds_path.parent.glob("*.yaml")):
        if path.resolve() == thresholds_path.resolve():
            continue
        try:
            others.append(load_record(path, journal_dir))
        except InputError as exc:  # a stray file beside ours: left out of the gain table, said so
            log.warning("gain table leaves out %s", exc)
    out = Path(reports_dir) / f"{rec.name}.html"
    atomic_write_text(out, render_report(rec, others=others))
    return out
