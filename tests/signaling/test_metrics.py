"""/metrics after a known scenario: exact values, parsed as Prometheus would."""

from __future__ import annotations

import asyncio
import gc

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import NodeHarness

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(node: NodeHarness) -> Samples:
    async with node.http.get(node.url("/metrics")) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_after_a_known_scenario(node: NodeHarness) -> None:
    a = await node.joined("r1", "a")
    b = await node.joined("r1", "b")
    c = await node.joined("r2", "c")
    await a.expect("participant-joined")

    refused = await node.connect()
    await refused.send(type="join", token="not-a-jwt")
    assert (await refused.expect("error"))["code"] == "invalid_token"
    try:
        await node.connect(origin="https://evil.example")
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == 403
    else:
        raise AssertionError("a foreign Origin was accepted")

    await a.ws.send_str("{oops")
    assert (await a.expect("error"))["code"] == "malformed_json"
    await b.send(type="shout")
    assert (await b.expect("error"))["code"] == "unknown_type"
    await b.send(type="leave")
    await b.expect("left")
    await a.expect("participant-left")
    for client in (b, refused):
        assert (await client.closed()).type == aiohttp.WSMsgType.CLOSE

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3.0
    while len(node.node.connections) != 2:  # closed sockets unregister once their loop ends
        assert loop.time() < deadline, node.node.connections
        await asyncio.sleep(0.01)
    m = await scrape(node)

    assert value(m, "parley_signaling_connections") == 2
    assert value(m, "parley_conference_rooms") == 2
    assert value(m, "parley_conference_participants") == 2
    assert value(m, "parley_conference_rooms_created_total") == 2
    assert value(m, "parley_conference_participants_left_total", reason="client_left") == 1

    received = "parley_signaling_messages_received_total"
    assert value(m, received, type="join") == 4
    assert value(m, received, type="invalid") == 2
    assert value(m, received, type="leave") == 1
    assert value(m, received, type="ping") == 0

    errors = "parley_signaling_errors_total"
    assert value(m, errors, code="malformed_json") == 1
    assert value(m, errors, code="unknown_type") == 1
    assert value(m, errors, code="invalid_token") == 1
    assert sum(v for (name, _), v in m.items() if name == errors) == 3

    auth = "parley_signaling_auth_failures_total"
    assert value(m, auth, reason="invalid_token") == 1
    assert value(m, auth, reason="origin_not_allowed") == 1

    assert value(m, "parley_signaling_join_latency_seconds_count") == 3
    assert value(m, "parley_signaling_join_latency_seconds_bucket", le="+Inf") == 3
    assert 0 < value(m, "parley_signaling_join_latency_seconds_sum") < 3

    sent = "parley_signaling_messages_sent_total"
    assert value(m, sent, type="joined") == 3
    assert value(m, sent, type="participant-joined") == 1
    assert value(m, sent, type="participant-left") == 1
    assert value(m, sent, type="left") == 1
    assert value(m, sent, type="error") == 3
    assert c  # still connected


async def test_metrics_carry_no_room_or_participant_labels(node: NodeHarness) -> None:
    clients = [await node.joined("secret-room", "secret-identity")]
    await clients[0].ws.send_str("[]")
    await clients[0].expect("error")
    async with node.http.get(node.url("/metrics")) as resp:
        text = await resp.text()
    assert "secret-room" not in text and "secret-identity" not in text
    assert "PA_" not in text


async def test_runtime_gauges_follow_the_nodes_tasks_and_sockets(node: NodeHarness) -> None:
    before = await scrape(node)
    assert value(before, "parley_node_threads") >= 1
    assert value(before, "process_resident_memory_bytes") > 0
    clients = [await node.joined("runtime", f"p{i}") for i in range(3)]
    during = await scrape(node)
    # Each connection runs a writer and a ticker beside aiohttp's handler task.
    assert (value(during, "parley_node_asyncio_tasks")
            >= value(before, "parley_node_asyncio_tasks") + 3 * 3)
    gc.collect()
    collected = await scrape(node)
    full = "parley_node_gc_pause_seconds_count"
    assert value(collected, full, generation="2") >= value(during, full, generation="2") + 1
    by_coroutine = {dict(labels)["coroutine"]: n for (name, labels), n in during.items()
                    if name == "parley_node_asyncio_tasks_by_coroutine"}
    assert sum(by_coroutine.values()) == value(during, "parley_node_asyncio_tasks")
    assert sum(n for name, n in by_coroutine.items() if name.startswith("signaling.")) >= 3 * 2
    assert value(during, "process_open_fds") >= value(before, "process_open_fds") + 3
    for client in clients:
        await client.ws.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while node.node.connections:
        assert loop.time() < deadline, node.node.connections
        await asyncio.sleep(0.01)
    after = await scrape(node)
    assert (value(after, "parley_node_asyncio_tasks")
            <= value(before, "parley_node_asyncio_tasks"))
