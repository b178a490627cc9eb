"""Auth controller: get a token from a ``TokenSource`` and read who and what it allows."""

from __future__ import annotations

from clients.desktop.state import AppState
from clients.desktop.tokens import ADMIN_SCOPE, TokenSource, claims, scopes_of


class AuthController:
    """Signs in through the token source; the state shows the subject and admin rights."""

    def __init__(self, state: AppState, source: TokenSource) -> None:
        self._state = state
        self._source = source
        self.token = ""

    def sign_in(self) -> str:
        """Fetch a token; on failure the GPU controls say why and ``""`` is returned."""
        try:
            self.token = self._source.token()
        except LookupError as exc:
            self._state.signed_in_as, self._state.is_admin = "", False
            self._state.gpu_controls_reason = str(exc)
            self._state.changed()
            return ""
        self._state.signed_in_as = str(claims(self.token).get("sub", "?"))
        self._state.is_admin = ADMIN_SCOPE in scopes_of(self.token)
        self._state.gpu_controls_reason = (
            "" if self._state.is_admin else "Start/Stop need the admin scope"
        )
        self._state.changed()
        return self.token
