"""Controllers: turn user actions and timers into backend calls and state changes."""
