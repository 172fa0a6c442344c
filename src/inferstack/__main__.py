from inferstack.cli import main

raise SystemExit(main())
