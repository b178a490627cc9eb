"""Entry point of ``python -m services.registry``."""

from __future__ import annotations

import sys

from services.registry.cli import main

if __name__ == "__main__":
    sys.exit(main())
