"""Immutable records that are cheap to make: the domain objects made for every request
and every step of a job (:mod:`inferq.core.models`, :mod:`inferq.core.structured`,
:mod:`inferq.core.limits`).

:func:`record` makes a slotted dataclass that the type checker holds frozen (PEP 681's
``frozen_default``: ``mypy --strict`` refuses an assignment to a field), with the
``__hash__`` a frozen dataclass has. At run time it is not frozen: a frozen
``__init__`` sets each field through ``object.__setattr__``, 1,300 instructions a field
against 200 for a plain assignment, and a submit makes a :class:`~inferq.core.models.Job`
of 25 fields, a request of 17 and their parts (about a tenth of the process's work for
a submit, docs/benchmarks.md). Code outside the type-checked package (tests, scripts)
could assign a field without an error at run time; nothing in the package does.

:func:`copied` makes changed copies of a record (``evolve``) without
:func:`dataclasses.replace`'s cost.
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
    :func:`dataclasses.replace` makes, for half its cost.

    ``replace`` passes every field to ``__init__`` as a keyword: 80,000 instructions to
    copy a :class:`~inferq.core.models.Job`, which is copied at every change of its
    state (a submit, a claim, an end). This reads and sets the slots directly. Only for
    records whose every field is an ``__init__`` argument and that have no
    ``__post_init__`` (which ``replace`` would run), as the constructor checks.
    """

    __slots__ = ("cls", "copy_all", "fields", "slots")

    def __init__(self, cls: type[RecordT]) -> None:
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        if not all(f.init for f in fields) or hasattr(cls, "__post_init__"):
            raise TypeError(f"{cls.__name__}: a copy must run its __init__; use replace")
        self.cls = cls
        #: each field's slot (a member descriptor), by name
        self.slots: dict[str, Any] = {f.name: cls.__dict__[f.name] for f in fields}
        self.fields = frozenset(self.slots)
        #: each slot's setter and getter
        self.copy_all = tuple((slot.__set__, slot.__get__) for slot in self.slots.values())

    def __call__(self, record: RecordT, changes: dict[str, Any]) -> RecordT:
        for name in changes:
            if name not in self.fields:
                raise TypeError(f"{self.cls.__name__} has no field {name!r}")
        copy: RecordT = object.__new__(self.cls)
        for set_slot, get_slot in self.copy_all:
            set_slot(copy, get_slot(record))
        slots = self.slots
        for name, value in changes.items():
            slots[name].__set__(copy, value)
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
