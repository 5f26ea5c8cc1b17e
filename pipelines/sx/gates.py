"""Quality gates of serial crystallography: does the declared geometry index the hits?

A wrong beam centre or distance still finds spots, but fewer hits index and their positional
RMSD grows; the spots' reciprocal vectors then point to a better centre. The raw pipeline
already measures all three (:meth:`lossbound.pipelines.sx.technique.SxTechnique.prepare`): the
indexed fraction of the hits, the mean RMSD, and the beam-centre shift that the geometry
refinement finds from every indexed still. The beam centre is checked on the solvent ring of
the stills' median frame (:func:`lossbound.pipelines.rings.centre_check`) where it has a measurable one
(independent of indexing, and still there when a centre far off stops the stills indexing),
else by the refinement over at least 3 indexed stills (one still cannot tell a centre shift
from a tilt of its crystal; measured stills such as thaumatin's show no measurable ring).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from lossbound.core.gates import GateCheck
from lossbound.pipelines.rings import centre_check

__all__ = ["DEFAULTS", "checks"]

DEFAULTS: dict[str, dict[str, Any]] = {
    # refuse when fewer than this fraction of the hits index with the declared geometry and cell
    # (simulation, beam centre 12 px off: 0.25; thaumatin and the simulation as declared: 1)
    "indexing_rate": {"action": "refuse", "min_rate": 0.3},
    # warn when the indexed spots' mean positional RMSD exceeds this (thaumatin 1.8, simulation 0.3)
    "indexing_rmsd": {"action": "warn", "max_px": 2.5},
    # refuse when the header's beam centre is off by more than this (the refinement does not always
    # recover it: a centre 6 px off on the simulation was refined by 1.7 px and not used)
    "beam_centre": {"action": "refuse", "max_px": 3.0},
}

_FIX_GEOMETRY = ("check the beam centre and detector distance (dataset.poni or the file header), the wavelength "
                 "and dataset.cell")


_MIN_STILLS = 3  # indexed stills the refined beam centre needs


def checks(prepared: Mapping[str, Any], settings: Mapping[str, Mapping[str, Any]], *, frames: np.ndarray,
           valid: np.ndarray, ai) -> list[GateCheck]:
    """Every sx gate not switched off, from the raw pipeline's own figures (``prepared``) and,
    for the beam centre with too few indexed stills, the solvent ring of the median still."""
    raw = prepared.get("raw") or {}
    out: list[GateCheck] = []
    indexed = "indexed_rate" in raw
    why_not = "no cell (dataset.cell): hits are not indexed" if not indexed else ""
    s = settings["indexing_rate"]
    if s["action"] != "off":
        limit = float(s["min_rate"])
        if not indexed or raw.get("hit_rate", 0.0) == 0.0:
            out.append(GateCheck("indexing_rate", None, limit, None, detail=why_not or "no hit to index"))
        else:
            rate = float(raw["indexed_rate"])
            out.append(GateCheck("indexing_rate", rate, limit, rate >= limit,
                                 detail=f"{rate:.0%} of the hits indexed with the declared geometry and cell "
                                        f"(at least {limit:.0%} expected)",
                                 fix=f"few hits index: {_FIX_GEOMETRY} (or lower technique.gates.indexing_rate."
                                     f"min_rate where hits index this rarely with a correct geometry)"))
    s = settings["indexing_rmsd"]
    if s["action"] != "off":
        limit = float(s["max_px"])
        rmsd = raw.get("mean_rmsd_px")
        if not indexed or rmsd is None or not math.isfinite(rmsd):
            out.append(GateCheck("indexing_rmsd", None, limit, None, unit="px",
                                 detail=why_not or "no indexed still"))
        else:
            before = (prepared.get("geometry_refinement") or {}).get("rmsd_before_px")
            out.append(GateCheck("indexing_rmsd", float(rmsd), limit, float(rmsd) <= limit, unit="px",
                                 detail=f"mean positional RMSD of the indexed spots {rmsd:.2f} px"
                                        + (f" ({before:.2f} px with the header's geometry)" if before else ""),
                                 fix=f"the indexed spots sit far from their predictions: {_FIX_GEOMETRY}"))
    s = settings["beam_centre"]
    if s["action"] != "off":
        out.append(_beam_centre(prepared, float(s["max_px"]), frames=frames, valid=valid, ai=ai))
    return out


def _beam_centre(prepared: Mapping[str, Any], limit: float, *, frames: np.ndarray, valid: np.ndarray,
                 ai) -> GateCheck:
    """The header's beam centre against the solvent ring of the median still (spots removed;
    broad, so its profile is compared against a 301-pixel background) where the ring is
    measurable, else against the refinement over at least 3 indexed stills."""
    ref = prepared.get("geometry_refinement") or {}
    shift = ref.get("beam_shift_px")
    fix = ("the header's beam centre is off: correct it in dataset.poni or the file header (the refined one is "
           "used for this study only when it indexes as many stills)")
    refined = None
    if shift is not None and int(ref.get("stills", 0)) >= _MIN_STILLS:
        refined = (f"the indexed spots' reciprocal vectors put it ({shift[0]:+.2f}, {shift[1]:+.2f}) px (slow, fast) "
                   f"from the header's over {ref['stills']} stills"
                   + ("" if ref.get("used", True) else f" (refined geometry not used: {ref.get('why_not')})"))
    median = np.where(valid, np.median(np.asarray(frames, dtype=np.float64), axis=0), 0.0)
    ring = centre_check(frames, valid, ai, polarization=None, max_px=limit, background_px=301, image=median)
    figures: dict[str, Any] = {"solvent_ring_px": ring.value}
    if shift is not None:
        figures.update(refined_shift_slow_px=float(shift[0]), refined_shift_fast_px=float(shift[1]),
                       refined_stills=int(ref.get("stills", 0)))
    if ring.passed is not None:
        return GateCheck("beam_centre", ring.value, limit, ring.passed, unit="px",
                         detail=f"the median still's solvent ring: {ring.detail}" + (f"; {refined}" if refined else ""),
                         fix=fix, figures={"method": "solvent ring", **figures})
    if refined is not None:
        off = float(math.hypot(*shift))
        return GateCheck("beam_centre", off, limit, off <= limit, unit="px",
                         detail=f"{refined}; no solvent ring to check it ({ring.detail})", fix=fix,
                         figures={"method": "refinement", **figures})
    why = (f"{ref.get('stills', 0)} indexed stills (the refined centre needs {_MIN_STILLS})" if shift is not None
           else "no geometry refinement")
    return GateCheck("beam_centre", None, limit, None, unit="px", detail=f"{why}; {ring.detail}", figures=figures)
