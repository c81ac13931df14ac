from palisade.cli.main import main

raise SystemExit(main())
