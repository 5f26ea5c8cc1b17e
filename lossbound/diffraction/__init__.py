"""Diffraction science shared by techniques and codecs: detector geometry and crystal lattices.

- :mod:`~lossbound.diffraction.detector`  pixel geometry from a pyFAI PONI (radii, solid angle)
- :mod:`~lossbound.diffraction.lattice`   unit cells, reciprocal bases, calibrant lattices
"""
