"""What a dialect is to the rest of the API: one description per dialect package.

Each ``api/<dialect>/__init__.py`` exports a :class:`Dialect` as ``DIALECT``, and
:mod:`inferq.api.dialects` lists them. Everything that used to know every dialect by
name is derived from that list: the routers the app mounts, whose error shape a path
gets (:meth:`Dialects.for_path`: the longest prefix wins, so the order of the list
does not matter), which paths take file uploads (the body limit), and the batch
formats and the workflow catalogue the runtime uses (:meth:`Dialects.plugins`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from inferq.core.batch_format import BatchFormat
from inferq.core.errors import InferqError
from inferq.core.workflows import Catalogue
from inferq.runtime import Plugins

#: renders an error (already made public) in the dialect's shape, given its HTTP status
#: (:func:`inferq.api.errors.status_of`); the renderer may still answer another one (JSON,
#: but for the console's HTML pages)
Renderer = Callable[[InferqError, int], Response]
#: renders FastAPI's request validation error, for a dialect that documents its own shape
ValidationRenderer = Callable[[RequestValidationError], JSONResponse]


def no_uploads(path: str) -> bool:
    return False


def no_own_limit(path: str) -> int | None:
    return None


@dataclass(frozen=True, kw_only=True)
class Dialect:
    """One provider API that inferq speaks."""

    #: its name, as batch records carry it (``Batch.dialect``)
    name: str
    #: every endpoint of the dialect
    router: APIRouter
    #: the path prefixes whose errors this dialect renders; the longest match wins, and
    #: ``""`` (every path) makes a dialect the one for paths no other one claims
    prefixes: tuple[str, ...]
    render_error: Renderer
    #: statuses of its own error classes, or its own statuses of core ones
    #: (over :data:`inferq.api.errors.STATUS`)
    statuses: Mapping[type[InferqError], int] = field(default_factory=dict)
    #: its own shape for a request that fails validation; None: :attr:`render_error` of
    #: an InvalidRequest naming the first bad field
    render_validation: ValidationRenderer | None = None
    #: whether a path (of any prefix) takes file bytes: the file limit, not the body limit
    is_upload: Callable[[str], bool] = no_uploads
    #: a path's own limit on its body in bytes, over the app's (None: the app's)
    body_limit: Callable[[str], int | None] = no_own_limit
    #: how its batches' input and output lines look, when it has batches
    batch_format: BatchFormat | None = None
    #: the node subtypes and templates of its document workflows, when it has them
    workflows: Catalogue | None = None


#: how many paths' :class:`PathRules` a :class:`Dialects` keeps (ids make paths many)
PATHS_REMEMBERED = 1024


@dataclass(frozen=True, slots=True)
class PathRules:
    """What the dialects say of one request path."""

    #: the dialect whose errors the path gets (the longest matching prefix)
    dialect: Dialect
    #: whether the path takes file bytes (the file limit, not the body limit)
    is_upload: bool
    #: a dialect's own body limit for the path, if one sets it
    body_limit: int | None


class Dialects:
    """The dialects one app serves, looked up by path."""

    def __init__(self, dialects: Iterable[Dialect]) -> None:
        self.all = tuple(dialects)
        owners: dict[str, Dialect] = {}
        for dialect in self.all:
            for prefix in dialect.prefixes:
                if prefix in owners:
                    raise ValueError(
                        f"prefix {prefix!r} is claimed by both {owners[prefix].name} "
                        f"and {dialect.name}"
                    )
                owners[prefix] = dialect
        if "" not in owners:
            raise ValueError("no dialect claims the paths the others leave (prefix '')")
        #: longest first, so the first match is the most specific one
        self._by_prefix = sorted(owners.items(), key=lambda item: len(item[0]), reverse=True)
        self._rules: dict[str, PathRules] = {}

    def rules(self, path: str) -> PathRules:
        """What the dialects say of ``path``. Every request asks (its body limit, its
        metrics label, its errors' shape) and the answers depend on the path alone, so
        they are kept, for up to :data:`PATHS_REMEMBERED` paths (then forgotten at once)."""
        found = self._rules.get(path)
        if found is None:
            found = PathRules(
                dialect=next(d for prefix, d in self._by_prefix if path.startswith(prefix)),
                is_upload=any(dialect.is_upload(path) for dialect in self.all),
                body_limit=next(
                    (n for d in self.all if (n := d.body_limit(path)) is not None), None
                ),
            )
            if len(self._rules) >= PATHS_REMEMBERED:
                self._rules.clear()
            self._rules[path] = found
        return found

    def for_path(self, path: str) -> Dialect:
        """The dialect whose errors ``path`` gets: the one with the longest matching prefix."""
        return self.rules(path).dialect

    def is_upload(self, path: str) -> bool:
        """Whether ``path`` takes file bytes (and so the file limit, not the body limit)."""
        return self.rules(path).is_upload

    def body_limit(self, path: str) -> int | None:
        """The body limit a dialect sets for ``path`` itself, if one does."""
        return self.rules(path).body_limit

    def plugins(self) -> Plugins:
        """What these dialects add to a runtime: their batch formats, by dialect name, and
        the workflow catalogue (one dialect at most has workflows; none: the empty one)."""
        catalogues = [d.workflows for d in self.all if d.workflows is not None]
        if len(catalogues) > 1:
            raise ValueError("only one dialect may bring a workflow catalogue")
        return Plugins(
            batch_formats={d.name: d.batch_format for d in self.all if d.batch_format is not None},
            workflows=catalogues[0] if catalogues else Catalogue(),
        )
