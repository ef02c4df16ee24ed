"""``python -m bench.faults``: see :mod:`bench.faults.cli`."""

from bench.faults.cli import main

raise SystemExit(main())
