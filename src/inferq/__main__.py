"""``python -m inferq`` runs the CLI."""

from __future__ import annotations

from inferq.cli import main

main()
