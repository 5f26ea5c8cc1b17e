"""Evaluators compare a compressed-data outcome with the raw-data outcome.

Each evaluator is an :class:`lossbound.evaluators.base.Evaluator` subclass registered in ``EVALUATORS``;
the pure metric functions they call live beside them (skimage.metrics style).
"""
from lossbound.core.registry import Registry

EVALUATORS: Registry = Registry("evaluator", package=__name__)
