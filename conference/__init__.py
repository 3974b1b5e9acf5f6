"""Rooms, participants, roles and the room registry: the domain of a Parley node.

``conference`` drives ``sfu`` and knows nothing of WebSockets or JSON.
"""
