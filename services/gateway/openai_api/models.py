"""Which ``model`` names the ``/v1`` routes accept: the served model, then its aliases.

The served model is what live workers report, or, with the fleet scaled to zero, the one
they served last (``fleet.served``): a client gets the same answers warm or cold, and its
request for that model starts the fleet. Any other name is a 404 ``model_not_found``.
"""

from __future__ import annotations

from services.gateway.fleet.served import Served
from services.gateway.http.problems import Problem
from services.gateway.http.state import GatewayState
from services.gateway.openai_api.bodies import Model


def model_ids(served: Served, aliases: tuple[str, ...]) -> list[str]:
    """The ids ``model`` may name: what live workers serve (else the model they served last,
    which a request starts again), then the configured aliases of it."""
    names = list(served.names) or ([served.model.name] if served.model else [])
    return list(dict.fromkeys([*names, *aliases]))


def _not_found(model: str, known: list[str]) -> Problem:
    serving = f"; this server serves {', '.join(f'`{k}`' for k in known)}" if known else ""
    return Problem(
        404,
        "model-not-found",
        "No such model",
        detail=f"The model `{model}` does not exist{serving}",
        errors=[{"path": "$.model", "message": "unknown model"}],
    )


async def served_for(state: GatewayState, model: str) -> Served:
    """What serves a request for ``model`` ("" or absent: the served one); else a 404."""
    served = await state.jobs.served.read()
    known = model_ids(served, state.settings.model_aliases)
    if model and model not in known:
        raise _not_found(model, known)
    return served


def listed(served: Served, aliases: tuple[str, ...]) -> list[Model]:
    """The Model objects of every id ``model`` may name (``created``: when first served)."""
    created = int(served.model.since) if served.model else 0
    return [Model(id=name, created=created) for name in model_ids(served, aliases)]
