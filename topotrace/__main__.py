"""``python -m topotrace``."""

from .cli import main

raise SystemExit(main())
