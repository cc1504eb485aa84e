"""The handler bench/nodes.py's node processes run: it does nothing."""

from __future__ import annotations

from typing import Any

from inferq.worker import Context, Handler


class NoOp(Handler):
    def predict(self, payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
        return {}
