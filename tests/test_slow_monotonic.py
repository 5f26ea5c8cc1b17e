"""Slow: do verdicts stay failed once a codec's bound fails, on azimuthal integration and
serial crystallography as well as tomography (tests/test_slow_sweeps.py)? Every codec over a
sqrt(2) grid; where a value passes above a failure, the thresholds file must report it and the
threshold must stay below the first failure (a pass above a failure is never trusted)."""
from __future__ import annotations

import pytest

from conftest import ROOT, compose

pytestmark = pytest.mark.slow

GRID = "[1,1.414,2,2.828,4,5.657,8,11.31,16]"


@pytest.mark.parametrize(("technique", "dataset", "extra"), [
    ("azint", "sim_azint", []),
    ("azint", "ceo2_pilatus", []),
    # SPERR's non-monotonic lattice change is caught on CeO2 above; on the stills it would add a
    # third of the points
    ("sx", "sim_sx", ["codec=[sz3,zfp,quant_blosc2,sparsify_m2]", "codec.quant_blosc2.bounds=[0.5,0.707,1,1.414,2]",
                      "codec.sparsify_m2.bounds=[1,1.414,2,2.828,4]"]),
])
def test_verdicts_over_a_fine_grid_are_monotonic_or_reported(technique, dataset, extra, tmp_path, shared_data):
    from lossbound.cli import evaluate

    res = evaluate.run(compose([f"technique={technique}", f"dataset={dataset}", f"paths.runs_dir={tmp_path / 'runs'}",
                                f"paths.cache_dir={ROOT / 'runs' / 'cache'}", "search=grid", f"sweep.bounds={GRID}",
                                "sweep.progress=false", "tracking.figures=none",
                                "acquisition.quiet_core.enabled=false", *extra]))  # verdicts, not speed
    for name, entry in res.codecs.items():
        assert len(entry["tested_values"]) >= 5, name
        late = entry.get("passed_above_first_failure")
        if late:
            grows = entry["larger_means_more_loss"]
            first = entry["first_failure"]["bound"]
            assert entry["bound"] is None or (entry["bound"] < first if grows else entry["bound"] > first), name
            assert all((v > first if grows else v < first) for v in late), (name, late, first)
