"""What every command shares: the consoles, the common options, settings, error reporting
and the one way to open what a command needs.

The options are declared once, as ``Annotated`` aliases (``DataDir``, ``DatabaseUrl``,
``ModelsFile``, ``LogLevel``, ``Limit``), and a command takes the ones it uses. An
:class:`~inferq.core.errors.InferqError` that escapes a command is reported by
:func:`reporting` as ``error: MESSAGE`` on stderr with exit code 1 (2 for bad
configuration). A command that works on the database takes ``--data-dir`` and
``--database-url`` through :func:`database_command`, which hands it the ``config`` they
make. It opens the store alone (:func:`with_store`) when plain store reads are all it
needs, or the services (:func:`with_services`, through
:func:`inferq.runtime.open_services`) when it runs domain operations.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from inferq.config import Settings
from inferq.core.errors import InferqError
from inferq.core.states import JobState
from inferq.engines.base import ModelSpec
from inferq.engines.registry import load_specs
from inferq.store.base import JobStore

if TYPE_CHECKING:
    from inferq.runtime import Runtime

T = TypeVar("T")

out = Console()
err = Console(stderr=True)
if not out.is_terminal:
    # Piped or captured output has no width to fit; keep tables whole.
    out.width = 200

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory [env INFERQ_DATA_DIR; default ./inferq-data]."),
]
DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="sqlite:///PATH [env INFERQ_DATABASE_URL]."),
]
ModelsFile = Annotated[
    Path | None,
    typer.Option("--models", help="TOML models file [env INFERQ_MODELS_FILE]."),
]
LogLevel = Annotated[str | None, typer.Option(help="debug, info, warning, error.")]
LogFormat = Annotated[
    str | None,
    typer.Option("--log-format", help="text or json, one object a line [env INFERQ_LOG_FORMAT]."),
]
#: how many rows a listing shows
Limit = Annotated[int, typer.Option(help="At most this many, newest first.")]


def settings(**given: Any) -> Settings:
    """Settings from the environment, overridden by the flags that were given."""
    try:
        return Settings(**{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


def _with_options(
    command: Callable[..., None],
    options: dict[str, Any],
    into: str,
    make: Callable[..., object],
) -> Callable[..., None]:
    """``command`` with the Typer ``options`` (parameter names to their annotated types)
    after its own parameters, given to it as one argument: ``into=make(**options)``."""
    own = inspect.signature(command, eval_str=True)
    params = [p for p in own.parameters.values() if p.name != into]
    params += [
        inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=option)
        for key, option in options.items()
    ]

    @functools.wraps(command)
    def with_options(*args: Any, **kwargs: Any) -> None:
        given = {key: kwargs.pop(key) for key in options}
        command(*args, **{into: make(**given)}, **kwargs)

    # what Typer reads the options from
    with_options.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
    with_options.__annotations__ = {p.name: p.annotation for p in params}
    return with_options


def database_command(
    app: typer.Typer, name: str
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register the decorated function as ``app``'s command ``name``, with the
    ``--data-dir`` and ``--database-url`` options after its own.

    The function takes ``config: Settings`` in their place: the settings they make.
    """
    options = {"data_dir": DataDir, "database_url": DatabaseUrl}

    def register(command: Callable[..., None]) -> Callable[..., None]:
        return app.command(name)(_with_options(command, options, "config", settings))

    return register


def service_command(command: Callable[..., None]) -> Callable[..., None]:
    """The decorated command (``serve``, ``worker``) with the options of a process that
    runs the service after its own, given to it as ``options: ServiceOptions``."""
    options = {
        "data_dir": DataDir,
        "models": ModelsFile,
        "database_url": DatabaseUrl,
        "log_level": LogLevel,
        "log_format": LogFormat,
    }
    return _with_options(command, options, "options", ServiceOptions)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


@contextlib.contextmanager
def reporting(code: int = 1) -> Iterator[None]:
    """Turn an :class:`InferqError` into ``error: MESSAGE`` on stderr and exit ``code``."""
    try:
        yield
    except InferqError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(code) from exc


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to its end, reporting an :class:`InferqError` (exit 1)."""
    with reporting():
        return asyncio.run(main)


def with_store(settings: Settings, action: Callable[[JobStore], Awaitable[T]]) -> T:
    """Run ``action`` on the opened store alone (no models, no blobs)."""
    from inferq.runtime import build_store

    async def main() -> T:
        store = build_store(settings)
        await store.open()
        try:
            return await action(store)
        finally:
            await store.close()

    return run(main())


def with_services(settings: Settings, action: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run ``action`` on the services (the store, the blobs; no engine, no worker)."""
    from inferq.api.dialects import DIALECTS
    from inferq.runtime import open_services

    async def main() -> T:
        async with open_services(settings, plugins=DIALECTS.plugins()) as runtime:
            return await action(runtime)

    return run(main())


def load_models(settings: Settings) -> dict[str, ModelSpec]:
    """The models file's models; a bad file ends the command (exit 2)."""
    with reporting(2):
        return load_specs(settings.models_file)


def configure_logging(settings: Settings) -> None:
    """Logs on stderr, as the settings' ``log_format`` says (see :mod:`inferq.cli.logs`)."""
    from inferq.cli import logs

    logs.configure(level=settings.log_level, fmt=settings.log_format)


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """The options of both commands that run the service (``serve``, ``worker``), as
    given (None: not given, so the environment or the default applies)."""

    data_dir: Path | None
    models: Path | None
    #: may hold the database's password: kept out of the repr
    database_url: str | None = field(repr=False)
    log_level: str | None
    log_format: str | None

    def settings(self, **more: Any) -> Settings:
        """The process's settings from these options and ``more``; its logging
        configured as they say."""
        given = dataclasses.asdict(self)
        given["models_file"] = given.pop("models")
        config = settings(**given, **more)
        configure_logging(config)
        return config

    def argv(self) -> list[str]:
        """The options given, as the command line of a process this one starts; but the
        database URL, which may hold a password (a command line is shown to every user of
        the machine): :meth:`environ` passes that on."""
        given = {
            "--" + name.replace("_", "-"): v
            for name, v in dataclasses.asdict(self).items()
            if name != "database_url"
        }
        return [str(part) for flag, v in given.items() if v is not None for part in (flag, v)]

    def environ(self) -> dict[str, str]:
        """What a process this one starts inherits in its environment: the database URL."""
        return {} if self.database_url is None else {"INFERQ_DATABASE_URL": self.database_url}


def state_filter(name: str | None) -> frozenset[JobState] | None:
    """The states a ``--state`` option keeps (None: every state); an unknown name ends the
    command (exit 2)."""
    if name is None:
        return None
    try:
        return frozenset({JobState(name)})
    except ValueError:
        fail(f"unknown state {name!r}; one of " + ", ".join(s.value for s in JobState), 2)


def timestamp(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")
