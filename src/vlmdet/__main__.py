from vlmdet.cli import main

raise SystemExit(main())
