from taskmasterd.cli import main

raise SystemExit(main())
