"""``python -m wrenmq`` is the ``wrenmq`` command, for environments where scripts are not on PATH."""

import sys

from wrenmq.cli import main

if __name__ == "__main__":
    sys.exit(main())
