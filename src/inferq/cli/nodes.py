"""``inferq nodes``: create, list and revoke node credentials."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from inferq.cli.common import database_command, err, out, timestamp, with_store
from inferq.config import Settings
from inferq.core.nodes import Node, NodeService

nodes_app = typer.Typer(
    help="Create, list and revoke the credentials of nodes (machines that run models).",
    no_args_is_help=True,
)


@database_command(nodes_app, "create")
def nodes_create(
    config: Settings, name: Annotated[str, typer.Option(help="A name for the node (unique).")]
) -> None:
    """Create a node; its token is printed alone on the last line of stdout (it is not
    shown again). Start `inferq node --token TOKEN` (or INFERQ_NODE_TOKEN) with it."""
    node, token = with_store(config, lambda store: NodeService(store).create(name=name))
    err.print(f"created node {node.id} ({node.name})")
    print(token)


@database_command(nodes_app, "list")
def nodes_list(config: Settings) -> None:
    """List nodes: their models, jobs in flight, when they were last seen, their version,
    and how many of the replicated jobs they ran their answer disagreed on."""
    nodes = with_store(config, lambda store: NodeService(store).list())
    table = Table(
        "name", "models", "in flight", "last seen", "version", "disagreed", "prefix", "revoked"
    )
    now = time.time()
    for node in nodes:
        table.add_row(*_row(node, now))
    out.print(table)


def _row(node: Node, now: float) -> list[str]:
    seen = node.last_seen
    return [
        node.name,
        ", ".join(f"{model} ({capacity})" for model, capacity in sorted(node.models.items())),
        "" if seen is None else str(node.in_flight),
        "" if seen is None else f"{max(now - seen, 0):.0f}s ago",
        node.version,
        f"{node.disagreed} of {node.compared}" if node.compared else "",
        node.prefix + "…",
        timestamp(node.revoked_at),
    ]


@database_command(nodes_app, "revoke")
def nodes_revoke(
    config: Settings, node: Annotated[str, typer.Argument(help="The node's id or name.")]
) -> None:
    """Revoke a node's token: its processes are refused within seconds and exit (2)."""
    gone = with_store(config, lambda store: NodeService(store).revoke(node))
    out.print(f"revoked node {gone.name} ({gone.id}): its processes stop within seconds")
