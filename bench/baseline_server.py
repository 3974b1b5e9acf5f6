"""The in-run baseline: a bare aiohttp WebSocket broadcast server.

``python -m bench.baseline_server --port N``. It speaks just enough of
Parley's protocol for bench/signaling_client.py: ``join`` (any token, the
``room`` field names the room) → ``joined``; ``data`` → the same ``data``
message to everyone else in the room (encoded once, sent with
``await ws.send_str`` in turn) and a ``data-sent`` ack when the message has
an ``id``. No authentication, queues, rate limits, sequence numbers or
metrics: what is left is aiohttp, JSON and the fan-out loop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import uuid

from aiohttp import WSMsgType, web

Rooms = dict[str, dict[str, web.WebSocketResponse]]
ROOMS = web.AppKey("rooms", Rooms)


def _dump(message: dict[str, object]) -> str:
    return json.dumps(message, separators=(",", ":"))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def rtc(request: web.Request) -> web.WebSocketResponse:
    rooms = request.app[ROOMS]
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    pid = uuid.uuid4().hex[:12]
    peers: dict[str, web.WebSocketResponse] | None = None
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            body = json.loads(msg.data)
            if body.get("type") == "join" and peers is None:
                peers = rooms.setdefault(str(body.get("room")), {})
                peers[pid] = ws
                await ws.send_str(_dump({"type": "joined", "id": body.get("id"),
                                         "participant": {"id": pid}}))
            elif body.get("type") == "data" and peers is not None:
                out = _dump({"type": "data", "from": pid, "payload": body.get("payload")})
                delivered = 0
                for other_id, other in list(peers.items()):
                    if other_id != pid and not other.closed:
                        with contextlib.suppress(ConnectionError):
                            await other.send_str(out)
                            delivered += 1
                if body.get("id") is not None:
                    await ws.send_str(_dump({"type": "data-sent", "id": body["id"],
                                             "delivered": delivered}))
    finally:
        if peers is not None:
            peers.pop(pid, None)
    return ws


def create_app() -> web.Application:
    app = web.Application()
    app[ROOMS] = {}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/rtc", rtc)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(create_app(), host="127.0.0.1", port=args.port, print=None,
                access_log=None)


if __name__ == "__main__":
    main()
