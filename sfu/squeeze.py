"""Seeing a sudden squeeze of a subscriber's link between bandwidth updates. Pure: plain
numbers in, a verdict out; sfu/linkstats.py feeds it, the Router polls it.

The link estimate (sfu/bandwidth.py) follows loss smoothed over one-second updates, so a
link whose capacity suddenly falls below what it is sent (a token bucket, a congested
hop) kept its video on a layer it could not carry for up to three seconds, while its
queue overflowed and the subscriber's video stalled. Two signals tell sooner:

- the subscriber's REMB: its receiver's delay-based estimator sees the queue grow and
  lowers its estimate to 0.85 times what it receives, within a few hundred milliseconds.
  A REMB that falls below :data:`REMB_SHARE` of what the link was sent is a squeeze;
- its receiver reports: a browser sends one with every NACK, so once the queue
  overflows they come every few tens of milliseconds. A window of them counting, from
  its first report of a loss, at least :data:`LOSS` of the packets lost
  (:data:`LOST` of at least :data:`PACKETS`), on a link whose smoothed loss is a third
  of that or less, is a squeeze. Only reports that follow the same stream's previous
  one within :data:`WINDOW` count: an audio stream reports every five seconds, and its
  many packets would dilute the window.

A squeeze leaves a ``cut``: what the link's estimate may be at most, below what it can
carry so that the queue that built up drains (Google Congestion Control likewise sets its
target to 0.85 times the rate received on over-use): :data:`MARGIN` times the REMB, or
times what the link delivered (the rate sent less the window's loss). LiveKit's stream
allocator acts the same way: a drop of its channel estimate reallocates at once instead
of waiting for its periodic pass.
"""

from __future__ import annotations

from collections import deque

POLL = 0.1
"""Seconds between the Router's looks at each link's REMB and pending cut."""
WINDOW = 0.5
"""Seconds of receiver reports the loss is judged over …"""
LOSS = 0.3
"""… in which at least this share of the packets expected were lost …"""
LOST = 8
"""… at least this many, out of at least …"""
PACKETS = 16
"""… this many expected since the window's first report of a loss (a short burst is not
a squeeze, and a loss just begun is not diluted by the clean reports before it) …"""
BASE = 3.0
"""… and at least this many times the link's smoothed loss (steady loss is not sudden)."""
REMB_SHARE = 0.7
"""A REMB that falls below this share of the rate sent is a squeeze."""
MARGIN = 0.85
"""A squeezed link's estimate is at most this share of its REMB or of what it delivered."""
HOLD = 3.0
"""Seconds after a squeeze before another can be seen: the layers the first one chose
need that long to show whether they fit (packets already queued are still lost)."""


class SqueezeWatch:
    """One subscriber link's squeeze signals (module docstring)."""

    def __init__(self) -> None:
        self.window: deque[tuple[float, int, int]] = deque()
        """(time, packets lost, packets expected) of the recent reports."""
        self.seen_at = float("-inf")
        """When the last squeeze was seen."""
        self.cut: float | None = None
        """Bits per second the link's estimate may be at most, until the link's next
        update takes it (None: no squeeze pending)."""
        self.count = 0
        """Squeezes seen so far."""

    def report(self, now: float, lost: int, expected: int, *, smoothed_loss: float,
               send_rate: float) -> bool:
        """One receiver report's new packets; True when it shows a squeeze."""
        self.window.append((now, lost, expected))
        while self.window and (now - self.window[0][0] > WINDOW or self.window[0][1] <= 0):
            self.window.popleft()  # (the window starts at its first report of a loss)
        lost_sum = sum(row[1] for row in self.window)
        expected_sum = sum(row[2] for row in self.window)
        if lost_sum < LOST or expected_sum < PACKETS:
            return False
        loss = min(1.0, lost_sum / expected_sum)
        if loss < max(LOSS, BASE * smoothed_loss):
            return False
        return self._seen(now, MARGIN * (1.0 - loss) * send_rate)

    def remb(self, now: float, remb: int | None, *, last: int | None,
             send_rate: float) -> bool:
        """The subscriber's REMB now (``last``: at the link's last update); True when it
        shows a squeeze."""
        if remb is None or last is None or remb >= 0.97 * last:
            return False
        if remb >= REMB_SHARE * send_rate:
            return False
        return self._seen(now, MARGIN * remb)

    def _seen(self, now: float, cut: float) -> bool:
        if now - self.seen_at < HOLD:
            return False
        self.seen_at, self.cut = now, cut
        self.count += 1
        self.window.clear()
        return True

    def take(self) -> float | None:
        """The pending cut, once."""
        cut, self.cut = self.cut, None
        return cut
