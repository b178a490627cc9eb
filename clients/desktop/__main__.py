"""``python -m clients.desktop``: open the desktop app."""

from __future__ import annotations

import sys

from clients.desktop.app import main

sys.exit(main())
