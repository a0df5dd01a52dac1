from __future__ import annotations

from .frontends.cli import main

raise SystemExit(main())
