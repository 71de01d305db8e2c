"""``python -m liverseg.benchmarks`` = ``liverseg-bench`` (see :mod:`liverseg.benchmarks.cli`)."""

from liverseg.benchmarks.cli import main

if __name__ == "__main__":
    main()
