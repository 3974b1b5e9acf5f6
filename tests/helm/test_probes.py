"""The probe contract the chart relies on: /livez stays 200 while the node drains, /readyz
turns 503, so Kubernetes stops routing to a draining pod without restarting it."""

from __future__ import annotations

from tests.conftest import NodeHarness


async def status_and_body(node: NodeHarness, path: str) -> tuple[int, dict]:
    async with node.http.get(node.url(path)) as resp:
        return resp.status, await resp.json()


async def test_livez_names_the_node(node: NodeHarness) -> None:
    assert await status_and_body(node, "/livez") == (200, {"live": True, "node": node.node.id})


async def test_livez_stays_up_while_readyz_turns_503_on_drain(node: NodeHarness) -> None:
    await node.node.drain(1.0)
    ready_status, ready = await status_and_body(node, "/readyz")
    assert (ready_status, ready["draining"]) == (503, True)
    live_status, live = await status_and_body(node, "/livez")
    assert (live_status, live["live"]) == (200, True)


async def test_livez_does_not_touch_the_room_registry(node: NodeHarness) -> None:
    """A registry that fails on every call (a Redis outage) must not fail liveness."""

    class Broken:
        def __getattr__(self, name: str) -> object:
            raise ConnectionError(f"registry unavailable ({name})")

    real = node.node.registry
    node.node.registry = Broken()  # type: ignore[assignment]
    try:
        assert (await status_and_body(node, "/livez"))[0] == 200
    finally:
        node.node.registry = real
