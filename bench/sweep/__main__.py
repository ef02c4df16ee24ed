from bench.sweep.cli import main

raise SystemExit(main())
