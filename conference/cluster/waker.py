"""A sleep that another piece of code can cut short (a periodic loop's "do it now").

``asyncio.wait_for(event.wait(), t)`` would do, but on Python 3.11 a cancellation that
lands while it is being set up can be lost, leaving the owner's ``close()`` waiting
for ever; a plain future with a timer has no such race.
"""

from __future__ import annotations

import asyncio


class Waker:
    def __init__(self) -> None:
        self._pending = False
        self._future: asyncio.Future[None] | None = None

    def wake(self) -> None:
        """End the current sleep now, or the next one at once."""
        self._pending = True
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if woken; clears the wake-up."""
        if self._pending:
            self._pending = False
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._future = future
        timer = loop.call_later(seconds, _resolve, future)
        try:
            await future
        finally:
            timer.cancel()
            self._future = None
            self._pending = False


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event``: ``True`` once it is set, ``False`` if ``timeout`` passed first
    (a queue's "everything is written" flag, awaited by a ``flush``)."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True
