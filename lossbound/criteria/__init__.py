"""What "the science result is unchanged" means: tolerances, the counting-noise yardstick, verdicts.

- :mod:`~lossbound.criteria.tolerance`        criteria, their ranges (fixed or noise-referenced) and the verdict
- :mod:`~lossbound.criteria.noise_reference`  the counting-noise reference: K re-samplings, effects, K policy
"""
