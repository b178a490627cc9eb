"""Clients of the HTTP API: the Python SDK and the ``tinyllama`` CLI."""
