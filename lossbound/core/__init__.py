"""Ground floor: shared data types and utilities. Imports nothing else of LossBound.

- :mod:`~lossbound.core.types`    Dataset, Result, Outcome, PointResult
- :mod:`~lossbound.core.errors`   InputError / ConfigError (one-line messages, non-zero exit)
- :mod:`~lossbound.core.registry` one registry per concept
- :mod:`~lossbound.core.hashing`  stable hashes and content checksums
- :mod:`~lossbound.core.masks`    pixel masks
- :mod:`~lossbound.core.noise`    photon-noise helpers
- :mod:`~lossbound.core.files`    atomic file replacement
- :mod:`~lossbound.core.cache`    on-disk results keyed by content hashes (raw results, references)
- :mod:`~lossbound.core.paths`    where outputs go (./runs or $LOSSBOUND_HOME) and data are found
- :mod:`~lossbound.core.gates`    the quality-gate record a technique returns
- :mod:`~lossbound.core.png`      PNG bytes from a figure or an image
"""
