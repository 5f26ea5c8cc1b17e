"""Technique pipelines (tomography, and later azimuthal integration, serial crystallography).

Each technique is a :class:`lossbound.pipelines.base.Technique` subclass registered in ``TECHNIQUES``;
a new technique is a new module (or sub-package) here plus a ``conf/technique/<name>.yaml``.
"""
from lossbound.core.registry import Registry

TECHNIQUES: Registry = Registry("technique", package=__name__)
