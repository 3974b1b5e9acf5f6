"""Protocol fuzzing: a real node takes 100,000 mutated client frames on many sockets, with
and without a joined session, and keeps answering a victim in another room promptly.

Every server frame must be strict JSON with a documented error code (never
``internal_error``), every socket must end with a documented close code, and the node
must hold nobody once the fuzzed sockets are gone.

    PARLEY_FUZZ_FRAMES=1000000 PARLEY_FUZZ_SEED=7 pytest tests/fuzz/test_protocol_fuzz.py -s

(``make fuzz`` runs it that way.) The seed is printed; a slot's frames repeat for the
same seed, the ids they name come from the node.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import statistics
import time

import pytest

from fuzz.known import known_bug
from tests.conftest import NodeHarness, SignalingConfig, StartNode, token
from tests.fuzz.frames import FrameMaker, Pool
from tests.fuzz.harness import Budget, Findings, Phase, Victim, run_slot, start_victim
from tests.media_helpers import media_node

FRAMES = int(os.environ.get("PARLEY_FUZZ_FRAMES", "100000"))
SEED = int(os.environ.get("PARLEY_FUZZ_SEED", "1307"))
CPU_RTT_BOUND = float(os.environ.get("PARLEY_FUZZ_CPU_RTT_BOUND", "0.5"))
"""CPU seconds the process may spend between a victim's ping and its pong: the time the
node gave to the fuzzed sockets first. CPU time, not wall time, so that other
processes on a shared machine do not count."""
WALL_RTT_BOUND = 5.0
"""Wall seconds: anything slower is a stall, however busy the machine."""
OPEN = SignalingConfig(rate_limit_per_second=1e6, rate_limit_burst=1_000_000,
                       join_rate_per_ip=0, max_connections_per_ip=0, resume_window=0.0)
"""Rate limit out of the way, so that the frames reach the handlers; no resumption, so
that a fuzzed socket that drops leaves at once (and the victim gets no resume tokens)."""

LIMITED = SignalingConfig(join_rate_per_ip=0, max_connections_per_ip=0, resume_window=0.0)
"""The default per-socket limits; the per-IP caps off, since every socket here (the
fuzzer's, the victim's, the newcomer's) comes from 127.0.0.1 (tests/signaling/test_abuse.py
covers them)."""


async def run_phase(h: NodeHarness, phase: Phase, findings: Findings) -> Victim:
    victim = await start_victim(h, findings)
    stop = asyncio.Event()
    pinger = asyncio.get_running_loop().create_task(victim.ping_until(stop))
    pool = Pool()
    shared = Budget(phase.frames - phase.media_frames)
    slots = [run_slot(h, i, FrameMaker(random.Random(f"{SEED}/{phase.name}/{i}"), pool),
                      shared, findings, phase) for i in range(phase.slots)]
    if phase.media_frames:
        maker = FrameMaker(random.Random(f"{SEED}/{phase.name}/media"), pool, media=True)
        slots.append(run_slot(h, phase.slots, maker, Budget(phase.media_frames), findings,
                              phase))
    try:
        await asyncio.gather(*slots)
    finally:
        stop.set()
        await pinger
    await _node_still_serves(h, victim, findings, phase)
    await victim.conn.close()
    return victim


async def _node_still_serves(h: NodeHarness, victim: Victim, findings: Findings,
                             phase: Phase) -> None:
    """A newcomer can join; the victim is still there; nobody else is left behind."""
    client = await h.connect()
    await client.join(token("fz1", "newcomer"))
    await client.send(type="ping", id="last")
    assert (await client.expect("pong"))["id"] == "last"
    await client.ws.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (len(h.node.connections) > 1
                                          or h.node.rooms.participant_count() > 1):
        await asyncio.sleep(0.1)
    if len(h.node.connections) != 1 or h.node.rooms.participant_count() != 1:
        findings.fail("sessions left behind", f"{phase.name}: after the fuzzing "
                      f"{len(h.node.connections)} sessions and {h.node.rooms.participant_count()} "
                      "participants remain (only the victim should)")
    if victim.conn.closed.is_set():
        findings.fail("victim disconnected", f"{phase.name}: the victim was disconnected")


def _summary(values: list[float]) -> str:
    ordered = sorted(values)
    if not ordered:
        return "none"
    return (f"p50 {statistics.median(ordered) * 1000:.1f} ms, "
            f"p99 {ordered[int(len(ordered) * 0.99)] * 1000:.1f} ms, "
            f"max {ordered[-1] * 1000:.1f} ms")


def _rtt_summary(victim: Victim) -> str:
    return (f"{len(victim.rtts)} pings; wall {_summary(victim.rtts)}; "
            f"cpu {_summary(victim.cpu_rtts)}")


def _unknown_errors_logged(records: list[logging.LogRecord], findings: Findings) -> list[str]:
    """Errors the node logged that are not known bugs. An ``internal_error`` reply is
    known when every handler failure logged is (the traceback says which bug it is)."""
    unknown, handler_failures = [], 0
    for record in records:
        if record.levelno < logging.ERROR:
            continue
        text = f"{record.name}: {record.getMessage()}\n{record.exc_text or ''}"
        handler_failures += record.getMessage() == "handler failed"
        bug = known_bug(text)
        if bug is None:
            unknown.append(text)
        else:
            findings.count_known(bug.name, text.splitlines()[-1])
    replies = findings.failure_counts.get("internal_error", 0)
    if not unknown and replies == handler_failures:
        for example in findings.failures.pop("internal_error", []):
            print("  internal_error of a known bug:", example[:600])
        findings.failure_counts.pop("internal_error", None)
    return unknown


@pytest.mark.timeout(max(300, FRAMES * 300 // 100_000))
async def test_fuzzed_frames_get_coded_errors_and_spare_a_victim_in_another_room(
        start_node: StartNode, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    print(f"\nprotocol fuzz: seed {SEED}, {FRAMES} frames (PARLEY_FUZZ_SEED, PARLEY_FUZZ_FRAMES)")
    findings = Findings(seed=SEED)
    phases = [
        (await media_node(start_node, signaling=OPEN),
         Phase("open", frames=FRAMES * 96 // 100, slots=6, media_frames=FRAMES // 50)),
        (await media_node(start_node, signaling=LIMITED),
         Phase("limited", frames=FRAMES * 4 // 100, slots=2, rate_limited=True)),
    ]
    started = time.monotonic()
    for h, phase in phases:
        phase_started = time.monotonic()
        victim = await run_phase(h, phase, findings)
        elapsed = time.monotonic() - phase_started
        print(f"{phase.name}: {phase.frames} frames in {elapsed:.1f} s; victim "
              f"{_rtt_summary(victim)}")
        if (victim.unanswered or not victim.rtts or max(victim.rtts) > WALL_RTT_BOUND
                or max(victim.cpu_rtts) > CPU_RTT_BOUND):
            findings.fail("victim slow", f"{phase.name}: victim pings {_rtt_summary(victim)}, "
                          f"{victim.unanswered} unanswered (bounds: cpu {CPU_RTT_BOUND} s, "
                          f"wall {WALL_RTT_BOUND} s)")
    print(f"{findings.frames} frames + {findings.syncs} syncs on {findings.connections} "
          f"connections in {time.monotonic() - started:.1f} s")
    print("closes:", dict(findings.closes.most_common()))
    print("replies:", dict(findings.replies.most_common(40)))
    logged = _unknown_errors_logged(caplog.records, findings)
    assert findings.frames >= FRAMES, findings.frames
    print("known bugs (tests/fuzz/test_regressions.py):", dict(findings.known))
    for bug, example in findings.known_examples.items():
        print(f"  {bug}: {example[:600]}")
    assert not findings.failures and not logged, findings.report() + "\n".join(logged[:20])
