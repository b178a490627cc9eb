"""Small readers over synthesized CloudFormation JSON, shared by the infra tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

IDENTITY_POLICY_TYPES = ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")


def as_list(value: Any) -> list[Any]:
    """``value`` as a list (IAM allows a scalar where a list is meant)."""
    return value if isinstance(value, list) else [value]


def identity_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(policy logical id, statement) for every identity-based policy statement."""
    for logical_id, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        documents = []
        if resource["Type"] in IDENTITY_POLICY_TYPES:
            documents.append(props["PolicyDocument"])
        if resource["Type"] == "AWS::IAM::Role":
            documents.extend(p["PolicyDocument"] for p in props.get("Policies", []))
        for document in documents:
            for statement in as_list(document["Statement"]):
                yield logical_id, statement


def statements_of_role(template: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    """Every Allow statement attached to role ``role_id`` by AWS::IAM::Policy resources."""
    found = []
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        props = resource["Properties"]
        if {"Ref": role_id} in props.get("Roles", []):
            found.extend(as_list(props["PolicyDocument"]["Statement"]))
    return found


def ref_id(value: Any) -> str | None:
    """The logical id in ``{"Ref": id}`` or ``{"Fn::GetAtt": [id, attr]}``."""
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"]
        if "Fn::GetAtt" in value:
            return value["Fn::GetAtt"][0]
    return None


def flatten(value: Any) -> str:
    """Render an intrinsic-laden string as text, tokens as ``<id>``, for matching."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(flatten(p) for p in parts)
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return "<{}.{}>".format(*value["Fn::GetAtt"])
    return repr(value)
