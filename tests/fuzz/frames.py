"""What the protocol fuzzer sends: every client message of docs/protocol.md, valid or
mutated (fuzz/mutate.py), binary and oversized frames, bad join tokens and SDP garbage.

One :class:`FrameMaker` per socket slot, seeded from the run's seed, so a slot's
choices repeat from run to run; the ids it names come from what the node said
(:class:`Pool`), so they differ.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from fuzz.mutate import STRINGS, Mutator, Raw, nested
from fuzz.seeds import ANSWER, CANDIDATE_LINE, EXAMPLES, OFFER_LINES, b64url
from signaling.auth import mint_token
from tests.conftest import KEY, SECRET

FUZZ_ROOMS = ("fz1", "fz2")
"""The rooms fuzzed sockets may join; the victim's room is never in a token they get."""
IDENTITIES = ("f0", "f1", "f2", "f3", "f4", "f5", "\u00e9\U0001f600", "x" * 256)
CLIENT_TYPES = tuple(EXAMPLES)
SAFE_HOSTS = ("127.0.0.1", "::1", "not-an-ip", "999.0.0.1", "", "127.0.0.1:9", "0x7f000001")
"""Candidate addresses the SFU may be told: loopback, or nothing it can reach."""
SEPARATORS = ("\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\n", "\r\n")


@dataclass(frozen=True)
class Frame:
    kind: Literal["text", "binary", "raw-text"]
    """``raw-text``: a text frame whose bytes are not UTF-8."""
    data: str | bytes
    closes: bool = False
    """The node is expected to close the socket after it (size limit, invalid UTF-8)."""
    may_reset: bool = False
    """Over twice the size limit: the node drops the connection without reading it, and
    the client may see a reset before the close frame."""


@dataclass
class Pool:
    """Ids the fuzzer has seen the node use, so messages can name real ones."""

    participants: deque[str] = field(default_factory=lambda: deque(maxlen=64))
    tracks: deque[str] = field(default_factory=lambda: deque(maxlen=64))
    identities: deque[str] = field(default_factory=lambda: deque(maxlen=32))

    def learn(self, message: Any, depth: int = 0) -> None:
        if depth > 6:
            return
        if isinstance(message, dict):
            identity = message.get("identity")
            if isinstance(identity, str) and identity not in self.identities:
                self.identities.append(identity)
            for value in message.values():
                self.learn(value, depth + 1)
        elif isinstance(message, list):
            for value in message[:16]:
                self.learn(value, depth + 1)
        elif isinstance(message, str):
            if message.startswith("PA_") and message not in self.participants:
                self.participants.append(message)
            elif message.startswith("TR_") and message not in self.tracks:
                self.tracks.append(message)


def _custom_token(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """Signed by hand: any header, any claims (even ones a JWT library would refuse)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    alg = header.get("alg")
    if alg not in digest:
        return signing_input + "."
    mac = hmac.new(SECRET.encode(), signing_input.encode(), digest[alg]).digest()
    return f"{signing_input}.{b64url(mac)}"


class FrameMaker:
    """Frames for one socket slot."""

    def __init__(self, rng: random.Random, pool: Pool, *, media: bool = False) -> None:
        self.rng = rng
        self.pool = pool
        self.media = media
        self.mutator = Mutator(rng)
        self.count = 0

    # -- ids and tokens -----------------------------------------------------
    def _pick(self, known: deque[str], fake: str) -> str:
        if known and self.rng.random() < 0.8:
            return self.rng.choice(list(known))
        return self.rng.choice([fake, fake + "x" * 12, "", "PA_" + "\u0000" * 12])

    def participant(self) -> str:
        return self._pick(self.pool.participants, "PA_")

    def track(self) -> str:
        return self._pick(self.pool.tracks, "TR_")

    def good_token(self, room: str | None = None, identity: str | None = None) -> str:
        rng = self.rng
        grants = {g: rng.random() < 0.5 for g in ("hidden", "can_publish_data", "room_admin")
                  if rng.random() < 0.15}
        return mint_token(key=KEY, secret=SECRET, room=room or rng.choice(FUZZ_ROOMS),
                          identity=identity or rng.choice(IDENTITIES),
                          role=rng.choice(["speaker", "listener", "moderator", "listener"]),
                          grants=grants, name=rng.choice([None, *STRINGS[:20]]),
                          metadata=rng.choice([None, "", "{}", "m" * 5000, "\ud800"]))

    def token(self) -> str:
        """A join token: mostly valid, else every way one can be refused."""
        rng = self.rng
        now = int(time.time())
        claims: dict[str, Any] = {"iss": KEY, "sub": rng.choice(IDENTITIES), "exp": now + 600,
                                  "grants": {"room": rng.choice(FUZZ_ROOMS), "role": "speaker"}}
        bad = rng.randrange(16)
        if bad < 6:
            return self.good_token()
        if bad == 6:
            return mint_token(key=KEY, secret=SECRET, room="fz1", identity="f1", ttl=-100)
        if bad == 7:
            return mint_token(key=KEY, secret="another-secret-0123456789abcdef-0123456", room="fz1",
                              identity="f1")
        if bad == 8:
            return mint_token(key=KEY, secret=SECRET, room="*", identity="f1")
        if bad == 9:
            return mint_token(key=KEY, secret=SECRET, room="fz2", identity="f2",
                              grants={"room_join": False})
        if bad == 10:
            claims["grants"] = self.mutator.odd_value()
        elif bad == 11:
            key = rng.choice(["exp", "nbf", "iat", "sub", "iss", "name", "metadata", "jti"])
            claims[key] = self.mutator.odd_value()
            if isinstance(claims[key], Raw):
                claims[key] = 10**400
        elif bad == 12:
            return _custom_token({"alg": rng.choice(["none", "HS512", "HS384"])}, claims)
        elif bad == 13:
            good = self.good_token()
            return good[:rng.randrange(len(good))] + rng.choice(["", "A", ".", "..", "\u00e9"])
        elif bad == 14:
            return rng.choice(["x" * 8193, "a.b.c", "....", "Bearer x", "\u0000", " "])
        else:
            claims["grants"] = {"room": rng.choice(FUZZ_ROOMS), rng.choice(
                ["role", "can_fly", "hidden"]): rng.choice([1, "yes", "god", None, [], {}])}
        try:
            return _custom_token({"alg": "HS256", "typ": "JWT"}, claims)
        except (TypeError, ValueError):
            return self.good_token()

    # -- SDP ----------------------------------------------------------------
    def _line(self, line: str) -> str:
        """Mutate one SDP line's tokens, never an address (candidates and c= stay put)."""
        if line.startswith(("a=candidate", "c=", "o=")):
            return line
        rng = self.rng
        tokens = line.split(" ")
        at = rng.randrange(len(tokens))
        tokens[at] = rng.choice(["0", "-1", "65536", "1" * 30, "\u00b2", "\u0663", "", "x",
                                 "VP8/90000", "H264/90000", "opus/48000/2", "rtx/90000",
                                 "apt=96", "96", "102", "sendonly", "a=recvonly", "m=video",
                                 "UDP/TLS/RTP/SAVPF", tokens[at] * 2])
        return " ".join(tokens) if rng.random() < 0.9 else line[:rng.randrange(len(line) + 1)]

    def sdp(self, answer: bool = False) -> str:
        """A publish offer (or subscriber answer), line-mutated; addresses stay loopback."""
        rng = self.rng
        lines = list(ANSWER.split("\r\n")[:-1] if answer else OFFER_LINES)
        if rng.random() < 0.15:
            return rng.choice(["", "v=0", "v=1\r\nm=audio 9 X 0", "v=0\r\n" + "a=x\r\n" * 9000,
                               "v=0\r\nm=\r\n", "\u0000", "v=0\r\n" + "m=audio 9 UDP 111\r\n" * 9])
        for _ in range(rng.randint(0 if rng.random() < 0.2 else 1, 4)):
            i = rng.randrange(len(lines))
            op = rng.random()
            if op < 0.2 and len(lines) > 1:
                del lines[i]
            elif op < 0.35:
                lines.insert(i, rng.choice(lines))
            elif op < 0.45:
                j = rng.randrange(len(lines))
                lines[i], lines[j] = lines[j], lines[i]
            elif op < 0.75:
                lines[i] = self._line(lines[i])
            elif op < 0.85 and not lines[i].startswith(("a=candidate", "c=", "o=")):
                sep = rng.choice(SEPARATORS)
                lines[i] += sep.join(["", "m=video 9 UDP/TLS/RTP/SAVPF 102", "a=mid:h",
                                      "a=sendonly", "a=rtpmap:102 H264/90000"])
            else:
                lines.insert(i, rng.choice([
                    "m=video 0 UDP/TLS/RTP/SAVPF 96", "m=audio 9 UDP/TLS/RTP/SAVPF 0",
                    "m=video 9 UDP/TLS/RTP/SAVPF \u00b2", "m=", "m=application 9 X",
                    "m=video 9 UDP/TLS/RTP/SAVPF 96", "a=rtpmap:\u00b2 opus/48000",
                    "a=mid:" + "m" * 300, "a=sendrecv", "a=inactive"]))
        return rng.choice(["\r\n", "\n"]).join(lines) + "\r\n"

    def candidate(self) -> Any:
        rng = self.rng
        if rng.random() < 0.15:
            return rng.choice([None, {}, {"candidate": ""}, "candidate:1", 7, [CANDIDATE_LINE]])
        tokens = CANDIDATE_LINE.split(" ")
        tokens[4] = rng.choice(SAFE_HOSTS)
        for _ in range(rng.randint(0, 2)):
            at = rng.choice([0, 1, 2, 3, 5, 6, 7, 8, 9])
            tokens[at] = rng.choice(["0", "-1", "65536", "99999999999", "tcp", "prflx", "relay",
                                     "raddr", "", "\u00e9", "typ", "tcptype"])
        line = " ".join(tokens)
        if rng.random() < 0.3:
            line = line.removeprefix("candidate:")
        return {"candidate": line, "sdpMid": rng.choice(["0", "1", None, 5, "\ud800"]),
                "sdpMLineIndex": rng.choice([0, 1, -1, None, "0", 2**64])}

    # -- messages -----------------------------------------------------------
    def example(self, mtype: str) -> dict[str, Any]:
        """A valid message of ``mtype`` naming ids the node knows."""
        rng = self.rng
        body: dict[str, Any] = {**EXAMPLES.get(mtype, {})}
        if "participant" in body:
            body["participant"] = self.participant()
        if "track" in body:
            body["track"] = self.track()
        if mtype == "join":
            body = {"token": self.token(), "version": 1, "media": self.media}
            if rng.random() < 0.2:
                body["room"] = rng.choice([*FUZZ_ROOMS, "victim", "", "x" * 257])
        elif mtype == "offer":
            body = {"sdp": self.sdp(), "tracks": [{"mid": m, "source": rng.choice(
                ["camera", "microphone", "screen", "x"]), "name": rng.choice(STRINGS)}
                for m in ("0", "1", "h")[:rng.randint(0, 3)]]}
        elif mtype == "answer":
            body = {"sdp": self.sdp(answer=True)}
        elif mtype == "candidate":
            body = {"target": rng.choice(["publisher", "subscriber"]),
                    "candidate": self.candidate()}
        elif mtype == "data":
            ids = list(self.pool.identities)
            body["to"] = rng.sample(ids, min(len(ids), rng.randint(0, 3))) \
                if rng.random() < 0.5 else None
            body["payload"] = rng.choice([{"text": "hi"}, "x" * rng.randrange(2000), [1, 2], 0,
                                          nested(rng.randint(850, 1000))])
        elif mtype == "subscription":
            body["state"] = rng.choice(["subscribed", "paused", "unsubscribed"])
        elif mtype == "mute-track":
            body["muted"] = rng.random() < 0.5
        elif mtype == "respond-to-invite":
            body["accept"] = rng.random() < 0.5
        return {"type": mtype, "id": f"f{self.count}", **body}

    def _type(self) -> str:
        rng = self.rng
        if self.media and rng.random() < 0.7:
            return rng.choice(["offer", "answer", "candidate", "subscription"])
        if rng.random() < 0.03:
            return rng.choice(["add-track", "", "PING", "join ", "unknown", "x" * 100])
        mtype = rng.choice(CLIENT_TYPES)
        if mtype == "leave" and rng.random() < 0.7:  # leaving ends the socket: less often
            mtype = "ping"
        return mtype

    def _protected(self) -> dict[str, Any]:
        """Without media a join keeps ``media: false`` (or a non-boolean, refused)."""
        return {} if self.media else {"media": [False, 0, "false", [], {}]}

    def frame(self) -> Frame:
        rng = self.rng
        self.count += 1
        pick = rng.random()
        if pick < 0.02:
            return Frame("binary", rng.choice([b"", b"{}", bytes(rng.randrange(256)
                                                for _ in range(rng.randrange(64)))]))
        if pick < 0.0215:
            size = rng.choice([65537, 70000, 140000])
            return Frame("text", '{"type":"ping","pad":"' + "x" * size + '"}', closes=True,
                         may_reset=size > 2 * 65536)
        if pick < 0.023:
            return Frame("raw-text", b'{"type":"ping","x":"\xff\xfe"}', closes=True)
        message = self.example(self._type())
        kind = rng.random()
        if kind < 0.35:
            return Frame("text", self.mutator.text(message))
        if kind < 0.85:
            mutated = self.mutator.mutate(message, self._protected())
            return Frame("text", self.mutator.text(mutated))
        return Frame("text", self.mutator.mangle(self.mutator.text(message)))
