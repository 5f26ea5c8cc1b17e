"""Indexing worker: one process that holds cctbx, fed spot lists over a pipe.

Run as a script (``python .../index_worker.py``), never imported: the cctbx-base wheel
bundles its own libstdc++, so cctbx must be loaded before scipy, fabio, pyFAI or matplotlib
(importing it later segfaults), and scipy.linalg must be loaded before cctbx's extension
modules (loaded RTLD_GLOBAL, they break a later scipy.linalg's LAPACK workspace queries).
Running as a script also keeps ``lossbound.pipelines`` (which loads pyFAI) out of it; the
lattice geometry comes from :mod:`lossbound.diffraction.lattice`, imported after cctbx
(``lossbound`` and ``lossbound.diffraction`` load nothing else).

Protocol: pickled ``(request_id, request)`` in, pickled ``(request_id, reply)`` out, each
prefixed by an 8-byte length, on the stdin/stdout pipes. cctbx's own prints go to stderr.
"""
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")
import boost_adaptbx.boost.python  # noqa: E402,F401  (first: see above)
import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402,F401  (before scitbx/rstbx)
import scipy.optimize  # noqa: E402,F401
import scipy.spatial.transform  # noqa: E402,F401
from scitbx.array_family import flex  # noqa: E402
from rstbx.indexing_api.lattice import DPS_primitive_lattice  # noqa: E402

import pickle  # noqa: E402
import struct  # noqa: E402
import traceback  # noqa: E402

from lossbound.diffraction import lattice  # noqa: E402


def basis_vectors(rlp: np.ndarray, max_cell: float) -> np.ndarray:
    """rstbx DPS (1-D FFT) basis search: the candidate direct-space vectors (Å)."""
    dps = DPS_primitive_lattice(max_cell=max_cell, recommended_grid_sampling_rad=None, horizon_phil=None)
    dps.index(reciprocal_space_vectors=flex.vec3_double(rlp.tolist()))
    return np.array([s.bvec() for s in dps.getSolutions()], float).reshape(-1, 3)


def index(request: dict) -> dict:
    y, x = np.asarray(request["y"], float), np.asarray(request["x"], float)
    plane = lattice.DetectorPlane(**request["plane"])
    cell = [float(v) for v in request["cell"]]
    options = request.get("options", {})
    n = y.size
    if n < options.get("min_spots", 8) or n <= 7:  # DPS index() asserts on <= 7 spots
        need = max(8, options.get("min_spots", 8))
        return {"indexed": False, "reason": f"{n} spots (indexing needs at least {need})",
                "hkl": np.zeros((n, 3)), "distance_px": np.full(n, np.inf), "basis": np.full((3, 3), np.nan),
                "cell": np.full(6, np.nan), "fraction": 0.0, "rmsd_px": float("nan"),
                "orientation_covariance": np.full((3, 3), np.nan), "candidates": 0}
    vectors = basis_vectors(plane.rlp(y, x), 2.0 * max(cell[:3]))
    kwargs = {k: options[k] for k in ("tolerance_px", "min_fraction", "cell_tolerance", "n_refine", "refine_cell")
              if k in options}
    return lattice.index_from_basis_vectors(y, x, vectors, cell, plane, **kwargs)


def main() -> None:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything cctbx prints must not corrupt the protocol
    inp = sys.stdin.buffer
    while True:
        head = inp.read(8)
        if len(head) < 8:
            return
        rid, request = pickle.loads(inp.read(struct.unpack("<Q", head)[0]))
        try:
            reply = {"ok": True, "result": index(request)}
        except Exception as exc:  # one bad frame is that frame's failure, not the worker's
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        data = pickle.dumps((rid, reply), protocol=pickle.HIGHEST_PROTOCOL)
        out.write(struct.pack("<Q", len(data)) + data)
        out.flush()


if __name__ == "__main__":
    main()
