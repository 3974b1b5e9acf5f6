"""A Python client for Parley: the wire protocol over aiohttp and aiortc, test media, load.

It stands apart from the server: nothing here imports ``signaling``, ``conference``
or ``sfu``; it speaks only the protocol documented in docs/protocol.md.
"""
