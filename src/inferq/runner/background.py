"""A loop a runner keeps in one asyncio task: started, and stopped by cancelling it."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

from inferq.core.events import cancel_and_wait


class Background(ABC):
    """Owns the task that runs :meth:`run` (the record runners, the webhook deliverer, the
    sweeper)."""

    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    @abstractmethod
    async def run(self) -> None:
        """The loop; it runs until cancelled."""
