"""Top floor: a study of one technique on one dataset.

- :mod:`~lossbound.study.context`    the context a point needs, rebuilt per process from the cache
- :mod:`~lossbound.study.point`      ``(context, codec setting) -> PointResult``, a pure function
- :mod:`~lossbound.study.search`     grid and bisection strategies (config group ``search``)
- :mod:`~lossbound.study.executor`   points in parallel worker processes, threads pinned
- :mod:`~lossbound.study.journal`    finished points under a file lock (resume)
- :mod:`~lossbound.study.thresholds` per dataset and across datasets
- :mod:`~lossbound.study.tracking`   MLflow through ``MlflowClient``
- :mod:`~lossbound.study.study`      the orchestration (``Study(cfg).run()``)
"""
