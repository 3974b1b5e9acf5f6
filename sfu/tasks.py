"""TaskSet: the one owner of a group of short-lived background tasks.

An object that must start work it cannot await in place (closing a
connection from a callback, releasing a room in a registry) spawns it here;
its own ``close()`` then awaits the set, so no task outlives its owner and
no exception is lost unseen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("parley.tasks")


class TaskSet:
    """Spawned tasks remove themselves when done; ``wait()`` awaits what is left."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=self._name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s task failed", self._name, exc_info=task.exception())

    async def wait(self) -> None:
        """Await every task, including those spawned while waiting."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def cancel(self) -> None:
        """Cancel every task and await them."""
        for task in list(self._tasks):
            task.cancel()
        await self.wait()
