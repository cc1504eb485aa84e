"""``inferq node``: run models for an inferq server, pulling work over HTTP."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from inferq.worker.handler import Handler
    from inferq.worker.runners import Runner

from inferq.cli.common import LogFormat, LogLevel, configure_logging, fail, reporting, settings


def node(
    server: Annotated[
        str, typer.Option(envvar="INFERQ_NODE_SERVER", help="The inferq server's URL.")
    ],
    token: Annotated[
        str,
        typer.Option(envvar="INFERQ_NODE_TOKEN", help="The node token (`inferq nodes create`)."),
    ],
    handler: Annotated[
        str | None,
        typer.Option(help="A Python handler, package.module:Class (with --model)."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="The model name the handler serves.")] = None,
    capacity: Annotated[
        int, typer.Option(min=1, max=256, help="Jobs the handler runs at once.")
    ] = 1,
    models: Annotated[
        Path | None,
        typer.Option(
            help="A models file whose engines (llama.cpp, ...) this node runs; each model's "
            "slots are its capacity.",
        ),
    ] = None,
    drain_seconds: Annotated[
        float,
        typer.Option(
            help="On SIGTERM: how long running jobs may finish before they are handed back."
        ),
    ] = 30.0,
    log_level: LogLevel = None,
    log_format: LogFormat = None,
) -> None:
    """Run models for an inferq server: claim its jobs over HTTP and post the results.

    Either a Python handler (--handler pkg.mod:Class --model NAME) or the engines of a
    models file (--models FILE). Exits 2 when the server refuses the token (wrong or
    revoked); on SIGTERM it finishes or hands back its jobs and exits 0.
    """
    from inferq.worker.client import NodeClient
    from inferq.worker.node import NodeProcess

    configure_logging(settings(log_level=log_level, log_format=log_format, worker=False))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    runners = _runners(handler, model, capacity, models)
    client = NodeClient(server, token)
    status = asyncio.run(NodeProcess(client, runners, drain_seconds=drain_seconds).run())
    raise typer.Exit(status)


def _runners(
    handler: str | None, model: str | None, capacity: int, models: Path | None
) -> dict[str, Runner]:
    from inferq.engines.registry import ModelRegistry, load_specs
    from inferq.worker.runners import EngineRunner, HandlerRunner

    runners: dict[str, Runner] = {}
    if handler is not None:
        if model is None:
            fail("--handler needs --model: the model name its jobs are submitted to", 2)
        runners[model] = HandlerRunner(_load_handler(handler), capacity=capacity)
    elif model is not None:
        fail("--model names the model of a --handler", 2)
    if models is not None:
        with reporting(2):
            registry = ModelRegistry(load_specs(models))
        for engine in registry:
            runners[engine.spec.name] = EngineRunner(engine)
    if not runners:
        fail("give a --handler and --model, or a --models file", 2)
    return runners


def _load_handler(spec: str) -> Handler:
    from inferq.worker.handler import Handler

    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        fail(f"--handler is package.module:Class, not {spec!r}", 2)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: the handler's package is here
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        fail(f"cannot load the handler {spec}: {exc}", 2)
    if not (isinstance(cls, type) and issubclass(cls, Handler)):
        fail(f"{spec} is not a subclass of inferq.worker.Handler", 2)
    handler: Handler = cls()
    return handler
