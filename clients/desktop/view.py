"""The main window: pure Tk widgets that render an ``AppState``; no HTTP here."""

from __future__ import annotations

import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

from clients.desktop.state import AppState

# Cost panel colours: normal, past the warning threshold, at the hard stop.
LEVEL_COLOURS = {"normal": "#1b5e20", "warning": "#e65100", "stopped": "#b71c1c"}
SPINNER = "|/-\\"
# C0 control characters other than tab and newline: Tk's text widget stops at a NUL.
_CONTROLS = {code: "\ufffd" for code in range(32) if chr(code) not in "\t\n"}


def printable(text: str) -> str:
    """``text`` as the transcript shows it: control characters become U+FFFD."""
    return text.translate(_CONTROLS)


class MainView:
    """Builds the widgets; ``render(state)`` shows the state; actions are callbacks."""

    def __init__(self, root: tk.Tk, *, actions: dict[str, Callable[..., None]]) -> None:
        self.root = root
        self._actions = actions
        self._spin = 0
        root.title("TinyLlama Desktop")
        self._build_backend(root)
        body = ttk.Frame(root)
        body.pack(fill="both", expand=True, padx=8, pady=4)
        self._build_prompt(body)
        side = ttk.Frame(body)
        side.pack(side="right", fill="y", padx=(8, 0))
        self._build_gpu(side)
        self._build_cost(side)

    def _build_backend(self, root: tk.Tk) -> None:
        bar = ttk.Frame(root)
        bar.pack(fill="x", padx=8, pady=(8, 0))
        ttk.Label(bar, text="Backend:").pack(side="left")
        self.backend_var = tk.StringVar(value="service")
        self.backend_buttons: dict[str, ttk.Radiobutton] = {}
        for value, label in (("service", "TinyLlama service"), ("openai", "OpenAI-compatible")):
            self.backend_buttons[value] = ttk.Radiobutton(
                bar,
                text=label,
                value=value,
                variable=self.backend_var,
                command=lambda: self._actions["backend"](self.backend_var.get()),
            )
            self.backend_buttons[value].pack(side="left", padx=4)
        ttk.Label(bar, text="Base URL:").pack(side="left", padx=(12, 2))
        self.base_url = ttk.Entry(bar, width=30)
        self.base_url.pack(side="left")
        ttk.Label(bar, text="Model:").pack(side="left", padx=(8, 2))
        self.model = ttk.Entry(bar, width=14)
        self.model.pack(side="left")
        ttk.Label(bar, text="API key:").pack(side="left", padx=(8, 2))
        self.api_key = ttk.Entry(bar, width=16, show="•")
        self.api_key.pack(side="left")
        self.apply_button = ttk.Button(bar, text="Apply", command=self._actions["apply_backend"])
        self.apply_button.pack(side="left", padx=4)
        self.user_label = ttk.Label(bar, text="")
        self.user_label.pack(side="right")

    def _build_prompt(self, body: ttk.Frame) -> None:
        panel = ttk.LabelFrame(body, text="Prompt")
        panel.pack(side="left", fill="both", expand=True)
        self.output = tk.Text(panel, wrap="word", height=20, width=60, state="disabled")
        self.output.pack(fill="both", expand=True, padx=4, pady=4)
        row = ttk.Frame(panel)
        row.pack(fill="x", padx=4, pady=4)
        self.prompt = ttk.Entry(row)
        self.prompt.pack(side="left", fill="x", expand=True)
        self.prompt.bind("<Return>", lambda _e: self._send())
        self.send_button = ttk.Button(row, text="Send", command=self._send)
        self.send_button.pack(side="left", padx=4)
        self.stop_button = ttk.Button(row, text="Stop", command=self._actions["stop_prompt"])
        self.stop_button.pack(side="left")

    def _send(self) -> None:
        self._actions["send"](self.prompt.get())
        self.prompt.delete(0, "end")

    def _build_gpu(self, side: ttk.Frame) -> None:
        self.gpu_panel = ttk.LabelFrame(side, text="GPU")
        self.gpu_panel.pack(fill="x")
        self.gpu_state = ttk.Label(self.gpu_panel, text="state: ?", font=("TkDefaultFont", 11))
        self.gpu_state.pack(anchor="w", padx=4)
        self.gpu_details = ttk.Label(self.gpu_panel, text="", justify="left")
        self.gpu_details.pack(anchor="w", padx=4)
        idle = ttk.Frame(self.gpu_panel)
        idle.pack(fill="x", padx=4)
        ttk.Label(idle, text="Keep warm (min):").pack(side="left")
        self.idle_var = tk.IntVar(value=5)
        self.idle = ttk.Spinbox(
            idle,
            from_=1,
            to=30,
            width=4,
            textvariable=self.idle_var,
            command=lambda: self._actions["idle"](self.idle_var.get()),
        )
        self.idle.pack(side="left")
        buttons = ttk.Frame(self.gpu_panel)
        buttons.pack(fill="x", padx=4, pady=4)
        self.start_button = ttk.Button(
            buttons, text="Start GPU", command=self._actions["gpu_start"]
        )
        self.start_button.pack(side="left")
        self.stop_gpu_button = ttk.Button(
            buttons, text="Stop GPU", command=self._actions["gpu_stop"]
        )
        self.stop_gpu_button.pack(side="left", padx=4)
        self.gpu_note = ttk.Label(self.gpu_panel, text="", wraplength=220, justify="left")
        self.gpu_note.pack(anchor="w", padx=4, pady=(0, 4))

    def _build_cost(self, side: ttk.Frame) -> None:
        self.cost_panel = ttk.LabelFrame(side, text="Cost")
        self.cost_panel.pack(fill="x", pady=(8, 0))
        self.cost_level = tk.Label(self.cost_panel, text="", fg="white", bg=LEVEL_COLOURS["normal"])
        self.cost_level.pack(fill="x", padx=4, pady=4)
        self.cost_details = ttk.Label(self.cost_panel, text="", justify="left")
        self.cost_details.pack(anchor="w", padx=4, pady=(0, 4))

    def render(self, state: AppState) -> None:
        """Show ``state``: transcript, GPU, cost, which controls are enabled."""
        self._render_prompt(state)
        self._render_gpu(state)
        self._render_cost(state)
        self.user_label.configure(
            text=f"signed in as {state.signed_in_as}" if state.signed_in_as else "not signed in"
        )

    def _render_prompt(self, state: AppState) -> None:
        lines = []
        for exchange in state.history:
            lines.append(printable(f"> {exchange.prompt}\n{exchange.answer}"))
            if exchange.error:
                lines.append(f"[{exchange.error}]")
            lines.append("")
        self.output.configure(state="normal")
        self.output.delete("1.0", "end")
        self.output.insert("1.0", "\n".join(lines))
        self.output.see("end")
        self.output.configure(state="disabled")
        self.send_button.state(["disabled"] if state.streaming else ["!disabled"])
        self.stop_button.state(["!disabled"] if state.streaming else ["disabled"])
        self.idle_var.set(state.idle_minutes)

    def _render_gpu(self, state: AppState) -> None:
        if not state.service_panels:
            self.gpu_state.configure(text="state: n/a for this backend")
            self.gpu_details.configure(text="")
            self.gpu_note.configure(text="GPU controls apply to the TinyLlama service only")
            for widget in (self.start_button, self.stop_gpu_button, self.idle):
                widget.state(["disabled"])
            return
        self.idle.state(["!disabled"])
        gpu = state.gpu or {}
        fleet = gpu.get("state", "?")
        spinner = ""
        if fleet == "starting":
            self._spin = (self._spin + 1) % len(SPINNER)
            spinner = f" {SPINNER[self._spin]}"
        self.gpu_state.configure(text=f"state: {fleet}{spinner}")
        if gpu:
            self.gpu_details.configure(
                text=(
                    f"instance: {gpu.get('instance_type', '?')}\n"
                    f"price: ${gpu.get('hourly_price_usd', 0):.2f}/h\n"
                    f"idle left: {gpu.get('idle_left_s', 0):.0f} s\n"
                    f"workers ready: {gpu.get('workers_ready', 0)}"
                )
            )
        controls = ["!disabled"] if state.is_admin else ["disabled"]
        self.start_button.state(controls)
        self.stop_gpu_button.state(controls)
        note = state.gpu_note or ("" if state.is_admin else state.gpu_controls_reason)
        self.gpu_note.configure(text=note)

    def _render_cost(self, state: AppState) -> None:
        if not state.service_panels:
            self.cost_level.configure(text="n/a for this backend", bg="grey")
            self.cost_details.configure(text="")
            return
        level = state.budget_level
        usage = state.usage or {}
        budget = usage.get("budget", {})
        headline = {
            "normal": "within budget",
            "warning": "past the warning threshold",
            "stopped": "monthly budget reached",
        }[level]
        self.cost_level.configure(text=headline, bg=LEVEL_COLOURS[level])
        today, month = usage.get("today", {}), usage.get("month", {})
        details = (
            f"today: {_totals(today)}\nmonth: {_totals(month)}\n"
            f"month to date (all): ${budget.get('month_to_date_usd', 0):.4f}\n"
            f"warning at ${budget.get('warn_usd', 0):.2f}, "
            f"hard stop at ${budget.get('hard_stop_usd', 0):.2f}"
        )
        if state.cost_note:
            details += f"\n{state.cost_note}"
        self.cost_details.configure(text=details)


def _totals(totals: dict) -> str:
    tokens = totals.get("prompt_tokens", 0) + totals.get("completion_tokens", 0)
    return f"${totals.get('estimated_cost_usd', 0):.4f}, {tokens} tokens"
