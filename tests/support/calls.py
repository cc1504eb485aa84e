"""Recording which of an object's methods are called, in order."""

from __future__ import annotations

from typing import Any


def record_calls(target: object, *names: str) -> list[str]:
    """Wrap the methods ``names`` of ``target`` (on the instance) so that each call appends
    its method's name to the returned list, then runs the method as before."""
    calls: list[str] = []
    for name in names:
        real = getattr(target, name)

        def recorded(*args: Any, _real: Any = real, _name: str = name, **kw: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kw)

        setattr(target, name, recorded)
    return calls
