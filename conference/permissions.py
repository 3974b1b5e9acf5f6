"""Roles and grants: what a participant may do in its room.

A token carries a ``role`` shorthand and/or explicit booleans; the role is
expanded first, then each explicit boolean overrides it (docs/auth.md).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Any

from conference.ids import RoomName


class Role(StrEnum):
    SPEAKER = "speaker"
    LISTENER = "listener"
    MODERATOR = "moderator"


@dataclass(frozen=True, kw_only=True)
class Grants:
    """The permissions of one participant in one room."""

    room: RoomName
    """The only room these grants open."""
    room_join: bool = True
    """May join the room at all."""
    can_publish: bool = False
    """May publish audio and video tracks."""
    can_subscribe: bool = True
    """May receive other participants' tracks."""
    can_publish_data: bool = False
    """May send chat/app data messages to the room."""
    can_request_publish: bool = False
    """May ask the moderators to be moved on stage (join as speaker)."""
    room_admin: bool = False
    """Moderator: may approve, demote, mute and remove."""
    hidden: bool = False
    """Not announced to the room (recorders, bots)."""

    def to_wire(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


BOOLEAN_GRANTS: tuple[str, ...] = tuple(f.name for f in fields(Grants) if f.name != "room")

_ROLE_GRANTS: dict[Role, dict[str, bool]] = {
    Role.SPEAKER: {
        "room_join": True,
        "can_publish": True,
        "can_subscribe": True,
        "can_publish_data": True,
        "can_request_publish": False,
        "room_admin": False,
    },
    Role.LISTENER: {
        "room_join": True,
        "can_publish": False,
        "can_subscribe": True,
        "can_publish_data": True,
        "can_request_publish": True,
        "room_admin": False,
    },
    Role.MODERATOR: {
        "room_join": True,
        "can_publish": True,
        "can_subscribe": True,
        "can_publish_data": True,
        "can_request_publish": False,
        "room_admin": True,
    },
}


def role_grants(role: Role) -> dict[str, bool]:
    """The booleans a role expands to (the table in docs/auth.md)."""
    return dict(_ROLE_GRANTS[role])


def expand_grants(
    room: RoomName, role: Role | None, overrides: dict[str, bool]
) -> Grants:
    """Role first, explicit booleans second. Unknown names must be refused by the caller."""
    values: dict[str, Any] = role_grants(role) if role is not None else {}
    values.update(overrides)
    return replace(Grants(room=room), **values)
