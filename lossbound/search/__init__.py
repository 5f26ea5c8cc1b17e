"""Search strategies: which codec values to evaluate next (one module per strategy).

- :mod:`~lossbound.search.base`    the :class:`Search` interface, the registry, ``make_search``
- :mod:`~lossbound.search.grid`    ``search=grid``: every value of a fixed list
- :mod:`~lossbound.search.bisect`  ``search=bisect``: the largest passing value to within √2

A new strategy is a new module here registering with ``SEARCHES`` plus ``conf/search/<name>.yaml``.
"""
from lossbound.search.base import SEARCHES, Search, make_search, non_monotonic

__all__ = ["SEARCHES", "Search", "make_search", "non_monotonic"]
