"""``python -m topotrace``."""

from topotrace.cli import main

raise SystemExit(main())
