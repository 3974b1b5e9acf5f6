"""A simulcast producer on a real (unconnected) aiortc receiver: what it tells the publisher."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver

import sfu.producer
from sfu.config import SfuConfig
from sfu.producer import Producer
from sfu.simulcast import SimulcastOffer

OFFER = SimulcastOffer(rids=("q", "h", "f"), rid_extension=10, repaired_extension=11)


async def test_the_remb_reaches_a_simulcast_publisher_before_its_top_layer_starts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Firefox starts its top encoding only once a REMB says the link can carry it: a REMB
    # that waited for that encoding's SSRC would never be sent.
    told: list[tuple[int, int]] = []

    async def record(receiver: RTCRtpReceiver, ssrc: int, bitrate: int) -> None:
        told.append((ssrc, bitrate))

    monkeypatch.setattr(sfu.producer, "send_remb", record)
    pc = RTCPeerConnection()
    producer = Producer(producer_id="p", kind="video",
                        receiver=pc.addTransceiver("video", direction="recvonly").receiver,
                        config=SfuConfig(), app_data={"mid": "0"}, simulcast=OFFER)
    try:
        producer.send_remb(400_000)
        await asyncio.sleep(0.05)
        assert told == []  # no encoding seen yet: no SSRC to name
        for layer, ssrc in zip(producer.layers[:2], (1111, 2222), strict=True):
            assert layer.encoding is not None
            layer.encoding.ssrc = ssrc
        producer.send_remb(600_000)
        await asyncio.sleep(0.05)
        assert told == [(2222, 600_000)]  # the highest encoding that has started
        assert producer.layers[2].encoding is not None
        producer.layers[2].encoding.ssrc = 3333
        producer.send_remb(900_000)
        await asyncio.sleep(0.05)
        assert told[-1] == (3333, 900_000)
    finally:
        await producer.close()
        await pc.close()
