"""``python -m bench.perf``: see :mod:`bench.perf.cli`."""

from bench.perf.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
