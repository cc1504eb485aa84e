"""Immutable records that are cheap to make: the domain objects made for every request
and every step of a job (:mod:`inferq.core.models`, :mod:`inferq.core.work`,
:mod:`inferq.core.structured`, :mod:`inferq.core.limits`).

:func:`record` makes a slotted dataclass that the type checker holds frozen (PEP 681's
``frozen_default``: ``mypy --strict`` refuses an assignment to a field), with the
``__hash__`` a frozen dataclass has. At run time it is not frozen: a frozen
``__init__`` sets each field through ``object.__setattr__``, 1,300 instructions a field
against 200 for a plain assignment, and a submit makes a :class:`~inferq.core.models.Job`
of 25 fields, a request of 17 and their parts (about a tenth of the process's work for
a submit, docs/benchmarks.md). Code outside the type-checked package (tests, scripts)
could assign a field without an error at run time; nothing in the package does.

:func:`copied` makes changed copies of a record (``evolve``) with a copy function
written for its class: a tenth of :func:`dataclasses.replace`'s cost for a ``Job``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Generic, TypeVar, dataclass_transform, overload

RecordT = TypeVar("RecordT")


@overload
def record(cls: type[RecordT], /) -> type[RecordT]: ...


@overload
def record(*, kw_only: bool = False) -> Callable[[type[RecordT]], type[RecordT]]: ...


@dataclass_transform(frozen_default=True)
def record(cls: type[RecordT] | None = None, /, *, kw_only: bool = False) -> Any:
    """``@dataclass(frozen=True, slots=True)`` for the type checker; at run time the
    same class without the frozen ``__setattr__`` (see the module's docstring)."""

    def make(cls: type[RecordT]) -> type[RecordT]:
        return dataclasses.dataclass(slots=True, kw_only=kw_only, unsafe_hash=True)(cls)

    return make if cls is None else make(cls)


class Copier(Generic[RecordT]):
    """Copies of a slotted record with some fields changed: what
    :func:`dataclasses.replace` makes, for a fraction of its cost.

    ``replace`` passes every field to ``__init__`` as a keyword: 80,000 instructions to
    copy a :class:`~inferq.core.models.Job`, which is copied at every change of its
    state (a submit, a claim, an end). A copier is a function written for its class, as
    :mod:`dataclasses` writes ``__init__``: one keyword a field, each slot set from the
    change or the original by a plain assignment. An unknown field is a ``TypeError``, as
    with ``replace``. Only for records whose every field is an ``__init__`` argument and
    that have no ``__post_init__`` (which ``replace`` would run), as the constructor
    checks.
    """

    __slots__ = ("cls", "copy", "fields")

    def __init__(self, cls: type[RecordT]) -> None:
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        if not all(f.init for f in fields) or hasattr(cls, "__post_init__"):
            raise TypeError(f"{cls.__name__}: a copy must run its __init__; use replace")
        self.cls = cls
        self.fields = frozenset(f.name for f in fields)
        self.copy: Callable[..., RecordT] = _copy_function(cls, [f.name for f in fields])

    def __call__(self, record: RecordT, changes: dict[str, Any]) -> RecordT:
        try:
            return self.copy(record, **changes)
        except TypeError as exc:
            unknown = next((name for name in changes if name not in self.fields), None)
            if unknown is None:
                raise
            raise TypeError(f"{self.cls.__name__} has no field {unknown!r}") from exc


#: a field left as it is in a copy
_KEPT: Any = object()


def _copy_function(cls: type[RecordT], names: list[str]) -> Callable[..., RecordT]:
    """``copy(record, **changes)`` for ``cls``'s fields ``names`` (identifiers, as a
    dataclass's fields are; the function's own names start with two underscores, which
    no field of a class body can)."""
    lines = [f"def copy(__record, *, {', '.join(f'{n}=__KEPT' for n in names)}):"]
    lines.append("    __made = __new(__cls)")
    for name in names:
        lines.append(f"    __made.{name} = __record.{name} if {name} is __KEPT else {name}")
    lines.append("    return __made")
    scope: dict[str, Any] = {"__KEPT": _KEPT, "__new": object.__new__, "__cls": cls}
    exec("\n".join(lines), scope)  # the text is made of field names only
    copy: Callable[..., RecordT] = scope["copy"]
    copy.__qualname__ = f"{cls.__qualname__}.copy"
    return copy


#: a copier for each class :func:`copied` has copied
_copiers: dict[type[Any], Copier[Any]] = {}


def copied(record: RecordT, changes: dict[str, Any]) -> RecordT:
    """``record`` with ``changes``: what ``dataclasses.replace(record, **changes)``
    makes (see :class:`Copier`)."""
    cls = type(record)
    copier = _copiers.get(cls)
    if copier is None:
        copier = _copiers[cls] = Copier(cls)
    copy: RecordT = copier(record, changes)
    return copy
