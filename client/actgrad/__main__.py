"""``python -m actgrad``: the `actgrad` command line (see `actgrad.cli`)."""

from actgrad.cli import main

raise SystemExit(main())
