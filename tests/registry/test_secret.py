"""The ``Secret`` wrapper hides its value everywhere but ``reveal()``."""

from __future__ import annotations

import pickle

import pytest

from services.registry import Secret


def test_secret_hides_value_in_repr_str_and_format() -> None:
    """repr, str, f-strings and %-formatting all show the mask."""
    secret = Secret("hunter2")

    shown = [repr(secret), str(secret), f"{secret}", f"{secret:>12}", "%s" % secret]  # noqa: UP031

    assert all("hunter2" not in text for text in shown)
    assert repr(secret) == "Secret('**********')"


def test_reveal_returns_the_value() -> None:
    """reveal() gives back exactly the wrapped text."""
    assert Secret("hunter2").reveal() == "hunter2"


def test_secrets_compare_by_value() -> None:
    """Two Secrets with the same value are equal; a Secret never equals a plain str."""
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert len({Secret("a"), Secret("a")}) == 1


def test_secret_refuses_pickling() -> None:
    """Pickling a Secret raises instead of writing the value out."""
    with pytest.raises(TypeError):
        pickle.dumps(Secret("hunter2"))
