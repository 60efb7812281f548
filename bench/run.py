"""``bench/run.py [--quick] [--only ...]``: the same as ``python -m bench`` from the project root.

Kept as a script because `make bench` and the commands in docs/benchmarks.md run it by path.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run by path, Python puts bench/ first on sys.path: put the project root there instead, so
    # that `bench` is the package and its modules cannot shadow top-level names.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    from bench.main import main

    sys.exit(main())
