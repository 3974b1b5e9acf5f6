"""The WebSocket edge of a Parley node: JWT joins, the wire protocol, HTTP routes and the CLI."""

__version__ = "0.1.0"
