"""Screenshots of a real Tk window on the test X server."""

from __future__ import annotations

import os
import tkinter as tk
from pathlib import Path

from PIL import ImageGrab


def screenshot(root: tk.Tk, path: Path, *, max_colours: int | None = None) -> Path:
    """Grab ``root``'s window from the X server into a PNG (optionally palette-reduced)."""
    root.update()
    x, y = root.winfo_rootx(), root.winfo_rooty()
    box = (x, y, x + root.winfo_width(), y + root.winfo_height())
    image = ImageGrab.grab(bbox=box, xdisplay=os.environ["DISPLAY"])
    if max_colours:
        image = image.convert("P", palette=1, colors=max_colours)  # 1 = adaptive palette
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    return path
