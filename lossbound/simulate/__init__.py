"""Synthetic detector data with known ground truth (the project's built-in default datasets)."""

from lossbound.simulate.tomo import (
    MATERIALS,
    SIMULATION_VERSION,
    read_simulation_attrs,
    simulate_tomo,
    simulation_params,
    write_dataexchange,
)

__all__ = [
    "MATERIALS",
    "SIMULATION_VERSION",
    "read_simulation_attrs",
    "simulate_tomo",
    "simulation_params",
    "write_dataexchange",
]
