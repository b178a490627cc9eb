"""The thread bridge: blocking HTTP runs on worker threads, results reach Tk via ``after``.

Worker threads never touch Tk: they put callbacks on a queue, and a ``root.after``
loop on the Tk thread runs them.
"""

from __future__ import annotations

import queue
import threading
import tkinter as tk
from collections.abc import Callable
from typing import Any

POLL_MS = 30


class Bridge:
    """Run work off the Tk thread; deliver its results on the Tk thread."""

    def __init__(self, root: tk.Misc) -> None:
        self._root = root
        self._inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._closed = False
        self._pending = self._root.after(POLL_MS, self._drain)

    def _drain(self) -> None:
        while True:
            try:
                callback = self._inbox.get_nowait()
            except queue.Empty:
                break
            callback()
        if not self._closed:
            self._pending = self._root.after(POLL_MS, self._drain)

    def deliver(self, callback: Callable[[], None]) -> None:
        """From any thread: run ``callback`` on the Tk thread soon."""
        self._inbox.put(callback)

    def run(
        self,
        work: Callable[[], Any],
        *,
        done: Callable[[Any], None],
        failed: Callable[[Exception], None],
    ) -> threading.Thread:
        """Run ``work()`` on a thread; then ``done(result)`` or ``failed(exc)`` on the Tk thread."""

        def target() -> None:
            try:
                result = work()
            except Exception as exc:  # every failure is shown in the window
                self.deliver(lambda error=exc: failed(error))
            else:
                self.deliver(lambda: done(result))

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Stop draining (the window is closing); late results are dropped."""
        self._closed = True
        self._root.after_cancel(self._pending)
