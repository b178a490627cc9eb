"""Settings sources in order: the registry, then the process environment on top.

Services describe which registry key feeds which setting variable; this
module reads the environment's whole path once (one paginated call) and
returns one flat mapping the settings loaders parse. An explicitly set
environment variable wins, so a laptop or a test can override anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote, urlparse, urlunparse

from services.registry.factory import open_registry
from services.registry.secret import Secret


def layered_environ(environ: Mapping[str, str], *, sources: Mapping[str, str]) -> dict[str, str]:
    """Registry values (``sources`` maps registry key → variable name) under ``environ``."""
    registry = open_registry(environ=environ)
    found = registry.get_many() if sources else {}
    layered: dict[str, str] = {}
    for key, variable in sources.items():
        if key in found:
            value = found[key]
            layered[variable] = value.reveal() if isinstance(value, Secret) else value
    layered.update({k: v for k, v in environ.items() if v != ""})
    return layered


def redis_url_with_password(url: str, password: str | None) -> str:
    """Put an AUTH token (injected as a secret, never stored in the registry) into a URL."""
    if not password:
        return url
    parsed = urlparse(url)
    host = parsed.hostname or "localhost"
    netloc = f":{quote(password, safe='')}@{host}" + (f":{parsed.port}" if parsed.port else "")
    return urlunparse(parsed._replace(netloc=netloc))
