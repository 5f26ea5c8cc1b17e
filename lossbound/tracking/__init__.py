"""MLflow, and only here (an import-linter contract keeps ``mlflow`` out of every other floor).

- :mod:`~lossbound.tracking.tracker`    runs, params, metrics, tags and artifacts through ``MlflowClient``
- :mod:`~lossbound.tracking.study_log`  a study's run and its point runs (what is logged where)
- :mod:`~lossbound.tracking.callbacks`  Hydra multirun glue: one parent run per multirun
- :mod:`~lossbound.tracking.review`     sign-off tags on the runs behind a threshold, and who is logged in
- :mod:`~lossbound.tracking.ui`         the MLflow UI and the link to a technique's runs
"""
