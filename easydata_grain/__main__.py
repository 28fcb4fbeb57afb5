"""``python -m easydata_grain``: the ``easydata-grain`` command."""

import sys

from easydata_grain.cli import main

if __name__ == "__main__":
    sys.exit(main())
