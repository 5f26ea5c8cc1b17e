"""Ground floor: shared data types and utilities. Imports nothing else of LossBound.

- :mod:`~lossbound.core.types`    Dataset, Result, Outcome, PointResult
- :mod:`~lossbound.core.errors`   InputError / ConfigError (one-line messages, non-zero exit)
- :mod:`~lossbound.core.registry` one registry per concept
- :mod:`~lossbound.core.hashing`  stable hashes and content checksums
- :mod:`~lossbound.core.masks`    pixel masks
- :mod:`~lossbound.core.noise`    photon-noise helpers
- :mod:`~lossbound.core.files`    atomic file replacement
"""
