"""The benchmark suite at tiny sizes (``benchmarks/run.py --smoke``), so it cannot rot: every
section runs, prints its table and saves numeric rows with the machine it ran on."""
from __future__ import annotations

import json
import math
import subprocess
import sys

from conftest import ROOT

SECTIONS = ["overhead", "codec", "pipelines", "search", "scaling", "feasibility", "acquisition"]  # e2e: long, not smoked


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_smoke_run_prints_and_saves_every_section(tmp_path):
    out = tmp_path / "b.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| CPU |" in proc.stdout
    for name in SECTIONS:
        assert f"\n## {name}: " in proc.stdout, name
    assert "\n## e2e" not in proc.stdout

    doc = json.loads(out.read_text())
    machine = doc["machine"]
    assert machine["cpu_model"] and machine["cores_available"] >= 1 and machine["ram_gb"] > 0
    assert machine["os"] and machine["python"]
    assert {"numpy", "h5py", "HDF5", "hdf5plugin", "pyFAI", "algotom", "scikit-image"} <= set(machine["libraries"])
    assert doc["smoke"] is True and list(doc["sections"]) == SECTIONS
    for name in SECTIONS:
        section = doc["sections"][name]
        assert section["error"] is None, (name, section["error"])
        assert section["rows"], name
        assert all(any(_numeric(v) for v in row.values()) for row in section["rows"]), (name, section["rows"])
    for name in ("overhead", "codec", "search", "scaling"):  # the sections the issue sets a target for
        assert [t["met"] for t in doc["sections"][name]["targets"]], name
    codec_rows = doc["sections"]["codec"]["rows"]
    assert {r["codec"] for r in codec_rows} == {"sz3", "zfp", "sperr", "blosc2", "bitshuffle_lz4", "zstd",
                                                "quant_blosc2"}
    assert all(r["same_output"] for r in codec_rows)  # the bare path did the same work
