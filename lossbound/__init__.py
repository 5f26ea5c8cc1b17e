"""LossBound: find the largest lossy-compression error bound a technique's science result tolerates."""

__version__ = "0.1.0"
