"""A study of one technique on one dataset: the engine, and ``Study`` that wires the floors.

- :mod:`~lossbound.study.context`    the context a point needs, rebuilt per process from the cache
- :mod:`~lossbound.study.point`      ``(context, codec setting) -> PointResult``, a pure function
- :mod:`~lossbound.study.scheduler`  every codec curve's search to its end, a few points at a time
- :mod:`~lossbound.study.executor`   points in parallel worker processes, threads pinned
- :mod:`~lossbound.study.gates`      quality gates on the raw result, before any search
- :mod:`~lossbound.study.calibrate`  the noise yardstick against a simulation's truth
- :mod:`~lossbound.study.study`      ``Study(cfg).run()``: context, gates, searches, results, tracking
"""
