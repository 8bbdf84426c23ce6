from cpms.cli.main import main

raise SystemExit(main())
