"""``python -m services.devstack``: the ``make up`` stack."""

import sys

from services.devstack.up import main

sys.exit(main())
