"""Request bodies are decoded into the protocol Struct; every mistake names its field."""

from __future__ import annotations

import pytest


@pytest.fixture
def auth(make_token):
    return {"Authorization": f"Bearer {make_token()}"}


async def _problem(response, status: int) -> dict:
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"].startswith("application/problem+json")
    return await response.json()


async def test_invalid_json_is_400(gateway, auth):
    """A body that is not JSON is a 400 problem."""
    response = await gateway.post(
        "/infer", data=b"{nope", headers={**auth, "Content-Type": "application/json"}
    )
    body = await _problem(response, 400)
    assert body["title"] == "Request body is not valid JSON"


async def test_unknown_field_is_422(gateway, auth):
    """An unknown field is refused, named in the message."""
    response = await gateway.post("/infer", json={"prompt": "hi", "temprature": 1}, headers=auth)
    body = await _problem(response, 422)
    assert "temprature" in body["detail"]


async def test_empty_prompt_names_the_path(gateway, auth):
    """An empty prompt is a 422 whose error names $.prompt."""
    response = await gateway.post("/infer", json={"prompt": ""}, headers=auth)
    body = await _problem(response, 422)
    assert body["errors"][0]["path"] == "$.prompt"


async def test_missing_prompt_is_422(gateway, auth):
    """A body without a prompt is refused and says so."""
    body = await _problem(await gateway.post("/infer", json={}, headers=auth), 422)
    assert "prompt" in body["detail"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_new_tokens", 0),
        ("max_new_tokens", 10**6),
        ("temperature", -1),
        ("temperature", 9.5),
        ("top_p", 0),
        ("top_k", -3),
        ("idle", 0),
        ("idle", 31),
        ("max_new_tokens", "many"),
    ],
)
async def test_out_of_range_numbers_name_the_path(gateway, auth, field, value):
    """Numbers outside their range (or of the wrong type) are 422 naming $.<field>."""
    response = await gateway.post("/infer", json={"prompt": "hi", field: value}, headers=auth)
    body = await _problem(response, 422)
    assert body["errors"][0]["path"] == f"$.{field}"


async def test_wrong_content_type_is_415(gateway, auth):
    """A body sent as text/plain is refused with 415."""
    response = await gateway.post(
        "/infer", data=b'{"prompt":"hi"}', headers={**auth, "Content-Type": "text/plain"}
    )
    await _problem(response, 415)


async def test_body_over_limit_is_413(gateway, auth, gateway_settings):
    """A body larger than the configured limit is refused with 413, not read whole."""
    big = b'{"prompt":"' + b"a" * (gateway_settings.max_body_bytes + 10) + b'"}'
    response = await gateway.post(
        "/infer", data=big, headers={**auth, "Content-Type": "application/json"}
    )
    await _problem(response, 413)


async def test_unknown_mode_is_400(gateway, auth):
    """mode=turbo is a 400 naming the allowed modes."""
    response = await gateway.post("/infer?mode=turbo", json={"prompt": "hi"}, headers=auth)
    body = await _problem(response, 400)
    assert "wait" in body["detail"]


async def test_unknown_route_is_problem_404(gateway):
    """Even a 404 has the problem+json shape."""
    await _problem(await gateway.get("/nope"), 404)


async def test_wrong_method_is_problem_405(gateway):
    """A GET on /infer is a 405 problem with Allow."""
    response = await gateway.get("/infer")
    await _problem(response, 405)
    assert "POST" in response.headers["Allow"]
