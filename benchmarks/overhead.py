"""Framework overhead of the default tomography study (target <= 10 %).

    python benchmarks/overhead.py [overrides ...]

Runs the default study with one worker on a fresh journal (the store and raw result
already exist, as after a facility's first study) and compares its wall time with the sum of
the work it did for the science (see ``study_engine.py``). The last line is
``framework_overhead_percent=<value>``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

if __name__ == "__main__":
    sys.argv[1:1] = ["overhead"]
    import study_engine

    study_engine.main()
