from bench.mini.backbones import main

raise SystemExit(main())
