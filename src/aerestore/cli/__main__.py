"""``python -m aerestore.cli``: the ``aerestore`` command."""

import sys

from aerestore.cli import main

if __name__ == "__main__":  # not when imported (the API docs import every module)
    sys.exit(main())
