from bench.tune.cli import main

raise SystemExit(main())
