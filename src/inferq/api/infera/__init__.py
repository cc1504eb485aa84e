"""Infera's API: ``/submit_job``, ``/get_result``, ``/chat/completions`` and friends."""

from __future__ import annotations

from inferq.api.infera.router import router
from inferq.api.infera.translate import render_error, render_validation

__all__ = ["render_error", "render_validation", "router"]
