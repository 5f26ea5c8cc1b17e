"""``python -m evaluate technique=tomo`` in a checkout: the same as ``lossbound study technique=tomo``.

Kept at the repository root for the documented command; it is not installed (the package's
entry points are ``lossbound`` and ``python -m lossbound``).
"""
from lossbound.cli.evaluate import main

if __name__ == "__main__":
    main()
