"""The wire contract shared by gateway and worker.

Imports neither torch nor aiohttp: both sides depend on this package, it
depends on neither of them.
"""
