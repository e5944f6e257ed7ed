from needlework.cli import main

raise SystemExit(main())
