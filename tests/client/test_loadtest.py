"""``parley loadtest`` against a real node: its rooms join, and frames are counted, not decoded."""

from __future__ import annotations

import asyncio
import json

import pytest

from signaling.cli import main
from tests.conftest import KEY, SECRET, StartNode
from tests.media_helpers import media_node


async def test_loadtest_counts_every_subscriber_receiving_video_and_audio(
        start_node: StartNode, capsys: pytest.CaptureFixture[str]) -> None:
    node = await media_node(start_node)
    argv = ["loadtest", "--url", node.url("/"), "--keys", f"{KEY}:{SECRET}",
            "--rooms", "1", "--publishers", "1", "--subscribers", "2", "--duration", "2",
            "--bitrate", "300000", "--room-prefix", "lt"]
    # The command runs its own event loop, as from a shell; the node stays on this one.
    assert await asyncio.wait_for(asyncio.to_thread(main, argv), 60) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["spec"]["rooms"] == 1 and SECRET not in json.dumps(result)
    assert (result["video_streams"], result["video_streams_receiving"]) == (2, 2)
    # 2 subscribers x one 30 fps clip, and x one 50 packet/s tone
    assert 45 < result["video_frames_received_per_second"] < 70, result
    assert 80 < result["audio_frames_received_per_second"] < 115, result
    assert 0 < result["join_to_first_frame_p50"] < 5
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while node.node.rooms.participant_count():  # everyone leaves when it ends
        assert loop.time() < deadline, "load clients still in their rooms"
        await asyncio.sleep(0.05)


async def test_light_loadtest_counts_frames_from_headers_in_worker_processes(
        start_node: StartNode, capsys: pytest.CaptureFixture[str]) -> None:
    node = await media_node(start_node)
    argv = ["loadtest", "--url", node.url("/"), "--keys", f"{KEY}:{SECRET}",
            "--rooms", "1", "--publishers", "1", "--subscribers", "3", "--duration", "2",
            "--bitrate", "300000", "--room-prefix", "light", "--no-audio", "--light",
            "--processes", "2"]
    assert await asyncio.wait_for(asyncio.to_thread(main, argv), 90) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["subscribers_joined"], result["streams_receiving"]) == (3, 3), result
    # 3 subscribers x one 30 fps clip; every frame complete on loopback
    assert 70 < result["complete_frames_per_s"] < 105, result
    assert result["delivered_min"] > 0.9, result
    # what the node sends per frame is what the publisher sent per frame
    assert result["received_packets_per_frame"] == pytest.approx(
        result["sent_packets_per_frame"], rel=0.3), result
    assert result["received_bytes_per_frame"] == pytest.approx(
        result["sent_bytes_per_frame"], rel=0.2), result
    assert 0 < result["latency_p50_s"] < 0.5 and result["latency_samples"] > 50, result
