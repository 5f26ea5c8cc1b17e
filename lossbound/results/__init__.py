"""What a study leaves behind, and what people read.

- :mod:`~lossbound.results.journal`     finished points, one JSON line each (resume)
- :mod:`~lossbound.results.thresholds`  per dataset and across datasets; the thresholds file
- :mod:`~lossbound.results.signoff`     review decisions recorded in the thresholds file
- :mod:`~lossbound.results.export`      a threshold as a codec configuration for acquisition systems
- :mod:`~lossbound.results.report`      the expert report (HTML)
- :mod:`~lossbound.results.plots`       figures; :mod:`~lossbound.results.summary` the console table
"""
