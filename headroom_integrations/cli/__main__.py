"""``python -m headroom_integrations.cli``: the same as ``headroom-memory``."""

from headroom_integrations.cli import main

raise SystemExit(main())
