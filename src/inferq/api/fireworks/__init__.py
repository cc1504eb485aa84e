"""Fireworks' dataset and batch inference job API: ``/v1/accounts/{account_id}/…``."""

from __future__ import annotations

from inferq.api.fireworks.router import router
from inferq.api.fireworks.translate import render_error

__all__ = ["render_error", "router"]
