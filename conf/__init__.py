"""LossBound's Hydra configs (``lossbound.conf``): one group per concept, shipped as package data."""
