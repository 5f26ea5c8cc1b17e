"""Top floor: the commands (``lossbound <command>``), each a thin wrapper over the floors below.

- :mod:`~lossbound.cli.main`       the ``lossbound`` console script and its subcommands
- :mod:`~lossbound.cli.evaluate`   ``lossbound study`` / ``python -m evaluate``: ``@hydra.main``
- :mod:`~lossbound.cli.config`     the packaged Hydra configs and their resolvers
- :mod:`~lossbound.cli.report`, :mod:`~lossbound.cli.review`, :mod:`~lossbound.cli.apply`,
  :mod:`~lossbound.cli.ui`, :mod:`~lossbound.cli.calibrate`
"""
