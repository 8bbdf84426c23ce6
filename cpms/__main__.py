from cpms.cli import main

raise SystemExit(main())
