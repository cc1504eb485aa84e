"""The dialects inferq speaks: the one list that the app, the error handlers, the body
limit and the runtime's plugins (batch formats, the workflow catalogue) are derived from.

A new dialect is a package under ``api/`` that exports a
:class:`~inferq.api.dialect.Dialect`, and one entry here. The order is the order in
which the routers are mounted (routes are matched in that order); which dialect
renders a path's errors does not depend on it.
"""

from __future__ import annotations

from inferq.api import (
    admin,
    anthropic,
    console,
    fireworks,
    infera,
    nodes,
    openai,
    together,
    unstructured,
)
from inferq.api.dialect import Dialects

DIALECTS = Dialects(
    (
        # First the routes of the most frequent requests: each route ahead of a request's
        # own costs it a match (1-3 µs in FastAPI), and the node protocol's 17 routes cost
        # a queue submit 33-60 µs when matched before it; together's 5 cost a node 6.
        together.DIALECT,  # a queue submit is one request per job
        nodes.DIALECT,  # a node's claims and results carry several jobs each
        anthropic.DIALECT,
        openai.DIALECT,
        fireworks.DIALECT,
        infera.DIALECT,
        unstructured.DIALECT,
        admin.DIALECT,
        console.DIALECT,
    )
)
