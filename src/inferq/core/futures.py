"""Handing an outcome worked out on a thread to the asyncio future that waits for it."""

from __future__ import annotations

import asyncio
from typing import Any


def settle(future: asyncio.Future[Any], ok: bool, outcome: Any) -> None:
    """Give ``future`` ``outcome`` as its result (``ok``) or as its exception, unless it
    is done already (cancelled: nobody waits for it). Call it on the future's loop."""
    if future.done():
        return
    if ok:
        future.set_result(outcome)
    else:
        future.set_exception(outcome)
