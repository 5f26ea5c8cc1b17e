"""Draw the house: which floor of ``lossbound`` imports which (``docs/imports.png``).

Reads the import graph of the package as installed (grimp, as import-linter does), folds every
module into its floor (``lossbound.<folder>``), and draws one box per floor, top floor first,
with an arrow for each floor that imports another (its number of import lines beside it). An
arrow pointing up would be a broken floor; a pair of arrows both ways, a circle.

    tools/lint_imports.sh builds the installed copy; this script takes its path:
    python tools/draw_imports.py SITE_PACKAGES_DIR [OUT.png]
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

FLOORS = ["cli", "study", "tracking", "results", "search", "criteria", "pipelines", "evaluators", "codecs",
          "diffraction", "core"]
LEVEL = {"cli": 0, "study": 1, "tracking": 2, "results": 3, "search": 4, "criteria": 5, "pipelines": 6,
         "evaluators": 6, "codecs": 7, "diffraction": 8, "core": 9}


def floor_edges(site: str) -> Counter:
    import grimp

    sys.path.insert(0, site)
    graph = grimp.build_graph("lossbound", cache_dir=None)
    edges: Counter = Counter()
    for module in graph.modules:
        src = module.split(".")[1] if module.count(".") else None
        for imported in graph.find_modules_directly_imported_by(module):
            dst = imported.split(".")[1] if imported.count(".") else None
            if src in LEVEL and dst in LEVEL and src != dst:
                edges[(src, dst)] += len(graph.get_import_details(importer=module, imported=imported)) or 1
    return edges


def draw(edges: Counter, out: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 9.0))
    ax = fig.subplots()
    ax.set_axis_off()
    pos = {}
    for name, level in LEVEL.items():
        same = [n for n, lv in LEVEL.items() if lv == level]
        x = 0.5 if len(same) == 1 else 0.3 + 0.4 * same.index(name)
        pos[name] = (x, 1 - level / 9.5 - 0.03)
    for (src, dst), n in edges.items():
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        up = LEVEL[dst] < LEVEL[src] or (LEVEL[dst] == LEVEL[src])
        ax.annotate("", xy=(x1, y1 + 0.02), xytext=(x0, y0 - 0.02),
                    arrowprops=dict(arrowstyle="->", color="red" if up else "0.55", lw=0.7,
                                    connectionstyle=f"arc3,rad={0.25 if abs(LEVEL[src] - LEVEL[dst]) > 1 else 0.0}"))
    for name, (x, y) in pos.items():
        ax.text(x, y, f"lossbound.{name}", ha="center", va="center", fontsize=10,
                bbox=dict(boxstyle="round,pad=0.35", fc="#eef3fb", ec="#3a5a8c"))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    bad = [f"{s} -> {d}" for s, d in edges if LEVEL[d] <= LEVEL[s]]
    ax.set_title("LossBound's floors: every arrow points down (an import)"
                 + (f"\nUPWARD: {', '.join(bad)}" if bad else "; none up, no circles"), fontsize=10)
    fig.savefig(out, dpi=110)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "imports.png"
    edges = floor_edges(argv[0])
    draw(edges, out)
    up = [(s, d) for s, d in edges if LEVEL[d] <= LEVEL[s]]
    for (s, d), n in sorted(edges.items(), key=lambda e: (LEVEL[e[0][0]], LEVEL[e[0][1]])):
        print(f"{s:>12} -> {d:<12} {n}")
    print(f"{out}: {len(edges)} floor-to-floor arrows, {len(up)} pointing up or sideways")
    return 1 if up else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
