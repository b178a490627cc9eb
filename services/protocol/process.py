"""Process hygiene every service shares: signals that work whatever the parent did.

A shell starts a background job (``make up &``) with SIGINT ignored, and some CI
runners and process managers do the same to SIGTERM. Ignored dispositions survive
``exec``, and Python turns SIGINT into ``KeyboardInterrupt`` only when SIGINT was
*not* ignored at start-up. So each entry point resets both signals before it
installs its own handlers; otherwise Ctrl-C and ``kill -INT`` silently do nothing.
"""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def reset_signals() -> None:
    """SIGINT raises KeyboardInterrupt and SIGTERM terminates, whatever we inherited."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux), so whoever started them can still stop them.

    A worker whose gateway died would otherwise be re-parented to init and outlive
    the ``make up`` (or test run) that started the whole tree. Returns False where
    the call is not available.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
