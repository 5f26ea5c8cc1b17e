"""``python -m lossbound <command>``: the same as the ``lossbound`` console script."""
import sys

from lossbound.cli.main import main

sys.exit(main())
