"""Roles expand to grants; explicit booleans override the role."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from conference.ids import RoomName
from conference.permissions import BOOLEAN_GRANTS, Grants, Role, expand_grants, role_grants

ROOM = RoomName("r1")

# The table in docs/auth.md; a change here is a change of the public contract.
EXPECTED: dict[Role, dict[str, bool]] = {
    Role.SPEAKER: {
        "room_join": True, "can_publish": True, "can_subscribe": True,
        "can_publish_data": True, "can_request_publish": False, "room_admin": False,
        "hidden": False,
    },
    Role.LISTENER: {
        "room_join": True, "can_publish": False, "can_subscribe": True,
        "can_publish_data": True, "can_request_publish": True, "room_admin": False,
        "hidden": False,
    },
    Role.MODERATOR: {
        "room_join": True, "can_publish": True, "can_subscribe": True,
        "can_publish_data": True, "can_request_publish": False, "room_admin": True,
        "hidden": False,
    },
}

DEFAULTS = {
    "room_join": True, "can_publish": False, "can_subscribe": True, "can_publish_data": False,
    "can_request_publish": False, "room_admin": False, "hidden": False,
}


def _booleans(grants: Grants) -> dict[str, bool]:
    return {name: getattr(grants, name) for name in BOOLEAN_GRANTS}


def test_the_boolean_grants_are_exactly_the_documented_ones() -> None:
    assert set(BOOLEAN_GRANTS) == set(DEFAULTS)


@pytest.mark.parametrize("role", list(Role), ids=[r.value for r in Role])
def test_role_expands_to_exactly_its_table_row(role: Role) -> None:
    grants = expand_grants(ROOM, role, {})
    assert grants.room == ROOM
    assert _booleans(grants) == EXPECTED[role]


def test_role_values_are_the_wire_names() -> None:
    assert [r.value for r in Role] == ["speaker", "listener", "moderator"]


def test_listener_cannot_publish_but_may_ask_to() -> None:
    grants = expand_grants(ROOM, Role.LISTENER, {})
    assert not grants.can_publish and grants.can_request_publish


def test_only_a_moderator_is_room_admin() -> None:
    admins = [r for r in Role if expand_grants(ROOM, r, {}).room_admin]
    assert admins == [Role.MODERATOR]


def test_no_role_and_no_booleans_gives_the_defaults() -> None:
    grants = expand_grants(ROOM, None, {})
    assert _booleans(grants) == DEFAULTS
    assert grants == Grants(room=ROOM)


def test_explicit_boolean_overrides_the_role() -> None:
    grants = expand_grants(ROOM, Role.SPEAKER, {"can_publish": False, "hidden": True})
    assert _booleans(grants) == EXPECTED[Role.SPEAKER] | {"can_publish": False, "hidden": True}


def test_explicit_boolean_can_raise_a_listener() -> None:
    grants = expand_grants(ROOM, Role.LISTENER, {"can_publish": True})
    assert grants.can_publish and grants.can_request_publish


def test_moderator_may_be_denied_room_join_explicitly() -> None:
    assert not expand_grants(ROOM, Role.MODERATOR, {"room_join": False}).room_join


def test_explicit_booleans_without_a_role_apply_over_the_defaults() -> None:
    grants = expand_grants(ROOM, None, {"can_publish_data": True, "can_subscribe": False})
    assert _booleans(grants) == DEFAULTS | {"can_publish_data": True, "can_subscribe": False}


def test_role_grants_returns_a_copy() -> None:
    table = role_grants(Role.LISTENER)
    table["can_publish"] = True
    assert role_grants(Role.LISTENER)["can_publish"] is False
    assert expand_grants(ROOM, Role.LISTENER, {}).can_publish is False


def test_grants_are_frozen_and_serialise_every_field() -> None:
    grants = expand_grants(ROOM, Role.MODERATOR, {})
    with pytest.raises(FrozenInstanceError):
        grants.can_publish = False  # type: ignore[misc]
    assert grants.to_wire() == {"room": "r1", **EXPECTED[Role.MODERATOR]}
