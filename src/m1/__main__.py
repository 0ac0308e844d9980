from m1.cli import main

raise SystemExit(main())
