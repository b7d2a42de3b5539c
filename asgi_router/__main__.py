from asgi_router.cli import main

raise SystemExit(main())
