"""``search=grid``: every value of a fixed list."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from lossbound.core.errors import ConfigError
from lossbound.search.base import SEARCHES, Search, _positive_list


@SEARCHES.register("grid")
class GridSearch(Search):
    """Every value of a fixed list (``sweep.bounds`` or the codec's own ``bounds``)."""

    name = "grid"

    def __init__(self, *, values: Sequence[float], **kw: Any) -> None:
        super().__init__(**kw)
        self.values = _positive_list("grid values", values)

    def propose(self, known, pending):
        skip = set(known) | set(pending)
        # least lossy first: the curve's start is what a reader looks at first
        return sorted((v for v in self.values if v not in skip), key=self.t)

    def points_left(self, known, pending):
        return float(len(self.propose(known, pending)))  # every value, all at once

    def describe(self):
        return {"strategy": self.name, "values": self.values}

    @classmethod
    def from_config(cls, options: Mapping[str, Any], *, grid_values: Sequence[float] | None,
                    **common: Any) -> "GridSearch":
        # a codec's bracket and limits belong to the bisection; the grid is the list itself
        if not grid_values:
            raise ConfigError("search=grid needs sweep.bounds or the codec's bounds")
        return cls(values=grid_values, **common)
