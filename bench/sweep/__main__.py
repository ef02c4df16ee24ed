from bench.sweep.coordinator import main

raise SystemExit(main())
