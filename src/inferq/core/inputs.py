"""The one check that every piece of client input passes before it can reach the store.

Every dialect's JSON bodies, every batch input line and every JSON document carried
inside a string field (Infera's ``request_data``, Fireworks' ``extraBody``) are
parsed by :func:`loads` (or, once parsed elsewhere, checked by :func:`check`). What
passes can be stored by SQLite and PostgreSQL alike, and written back out as JSON:

* **nesting** at most :data:`MAX_DEPTH` arrays or objects deep;
* **numbers** finite (no ``NaN``, ``Infinity`` or ``1e999``), integers within a
  signed 64-bit range (:data:`INT_MIN` .. :data:`INT_MAX`);
* **text** (keys and values) without NUL characters (PostgreSQL cannot store
  them) and without lone UTF-16 surrogates such as ``"\\ud800"`` (they are not
  Unicode text, and no database encodes them).

Values that break a rule raise :class:`~inferq.core.errors.InvalidRequest` naming
where, so each dialect renders a 400 in its own shape. Columns with a narrower
type have their own range here: :data:`PRIORITY_MIN` .. :data:`PRIORITY_MAX`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from inferq.core.errors import InvalidRequest

#: the deepest nesting of arrays and objects accepted in client JSON
MAX_DEPTH = 64
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
#: a job's priority is stored as a 32-bit integer (PostgreSQL's ``integer``)
PRIORITY_MIN = -(2**31)
PRIORITY_MAX = 2**31 - 1


class MalformedJson(InvalidRequest):
    """The text is not JSON at all (a syntax error, or bytes that are not UTF-8)."""


def _refuse_constant(name: str) -> Any:
    raise InvalidRequest(f"{name} is not a JSON number; numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidRequest(f"the number {text[:40]} is too large; numbers must be finite")
    return value


def _bounded_int(text: str) -> int:
    # decide by length first: int() of a 100,000-digit string is slow (and refused
    # by Python's digit limit past 4,300 digits)
    if len(text.lstrip("-")) > 19:
        raise InvalidRequest(_int_message(text))
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise InvalidRequest(_int_message(text))
    return value


def _int_message(text: str) -> str:
    shown = text if len(text) <= 40 else text[:40] + "…"
    return f"the integer {shown} is out of range; integers must fit in 64 bits"


#: the parser of :func:`loads`, built once: ``json.loads`` with keyword arguments builds a
#: new decoder on every call (about half the cost of parsing a small body)
_DECODER = json.JSONDecoder(
    parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int
)


def loads(data: bytes | str, *, what: str = "the body", param: str | None = None) -> Any:
    """Parse client JSON and :func:`check` it; raise InvalidRequest naming ``what``.

    ``param`` is the request field the text came from (``request_data``): the errors
    name it, so a dialect that renders per-field errors points at it.
    """
    try:
        return _loads(data, what)
    except InvalidRequest as exc:
        if param is None:
            raise
        exc.param = f"{param}.{exc.param}" if exc.param else param
        raise


def _loads(data: bytes | str, what: str) -> Any:
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedJson(f"{what} is not valid UTF-8") from None
    else:
        text = data
    _check_nesting(text, what)
    try:
        if text.startswith("\ufeff"):  # as json.loads refuses it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        value = _DECODER.decode(text)
    except InvalidRequest as exc:
        raise InvalidRequest(f"{what}: {exc.message}") from None
    except json.JSONDecodeError as exc:
        raise MalformedJson(f"{what} is not valid JSON ({exc.msg} at column {exc.colno})") from None
    except (RecursionError, ValueError) as exc:  # pragma: no cover - guarded above
        raise InvalidRequest(f"{what} is not valid JSON ({exc})") from None
    # The parser has bounded the numbers, and the nesting is checked: only text can still
    # break a rule, and only through a \u escape (the strict parser refuses a raw NUL, and
    # UTF-8 bytes cannot carry a lone surrogate), or a str that is not ASCII.
    if "\\u" in text or not (isinstance(data, bytes) or text.isascii()):
        check(value, what=what)
    return value


def _check_nesting(text: str, what: str) -> None:
    """Refuse text nested deeper than MAX_DEPTH before the recursive parser sees it.

    Counts brackets outside strings in one pass; malformed text is left to the parser.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    in_string = False
    escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise InvalidRequest(
                    f"{what} is nested more than {MAX_DEPTH} levels deep", param=None
                )
        elif char in "]}":
            depth -= 1


def check(value: Any, *, what: str = "the body") -> None:
    """Check an already-parsed JSON value against the rules above."""
    if _clean(value):
        return
    # something breaks a rule (or is of a type the quick pass does not know): walk
    # again, naming where, so the error points at the first offending place
    _check_at(value, what)


def _clean(value: Any) -> bool:
    """Whether ``value`` surely passes :func:`check`: one quick walk that builds no
    paths, for the common case (every request body passes it)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is str:
            if not _text_ok(item):
                return False
        elif kind is dict:
            if depth >= MAX_DEPTH:
                return False
            for key, child in item.items():
                if type(key) is not str or not _text_ok(key):
                    return False
                stack.append((child, depth + 1))
        elif kind is list:
            if depth >= MAX_DEPTH:
                return False
            stack.extend((child, depth + 1) for child in item)
        elif kind is int:
            if not INT_MIN <= item <= INT_MAX:
                return False
        elif kind is float:
            if not math.isfinite(item):
                return False
        elif item is not None and kind is not bool:
            return False
    return True


def _text_ok(text: str) -> bool:
    """Whether :func:`check_text` passes ``text``."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_at(value: Any, what: str) -> None:
    """:func:`check`, naming where the first offending value is."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            check_text(item, param=path or None, what=what)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                raise InvalidRequest(
                    f"{_at(what, path)}: {_int_message(str(item))}", param=path or None
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidRequest(
                    f"{_at(what, path)}: {item} is not a JSON number; numbers must be finite",
                    param=path or None,
                )
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise InvalidRequest(
                    f"{what} is nested more than {MAX_DEPTH} levels deep", param=path or None
                )
            if isinstance(item, dict):
                for key, child in item.items():
                    shown = _show(key)
                    child_path = f"{path}.{shown}" if path else shown
                    if isinstance(key, str):
                        check_text(key, param=child_path, what=what)
                    stack.append((child, depth + 1, child_path))
            else:
                for index, child in enumerate(item):
                    # dotted, as the dialects name a field (``messages.0.content``)
                    child_path = f"{path}.{index}" if path else str(index)
                    stack.append((child, depth + 1, child_path))


def _show(key: Any) -> str:
    """A key as it can be quoted back in an error: short, printable, valid Unicode."""
    text = str(key)
    text = text if len(text) <= 40 else text[:40] + "…"
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def _at(what: str, path: str) -> str:
    return f"{what} at {path}" if path else what


def check_text(text: str, *, param: str | None = None, what: str = "the body") -> None:
    """Refuse text that no store can keep: NUL characters and lone surrogates."""
    if text.isascii():
        if "\x00" in text:
            raise InvalidRequest(
                f"{_at(what, param or '')} contains a NUL character (\\u0000), "
                "which cannot be stored",
                param=param,
            )
        return
    if "\x00" in text:
        raise InvalidRequest(
            f"{_at(what, param or '')} contains a NUL character (\\u0000), which cannot be stored",
            param=param,
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            f"{_at(what, param or '')} contains a lone surrogate (such as \\ud800), "
            "which is not valid Unicode text",
            param=param,
        ) from None


def check_priority(priority: int, *, param: str = "priority") -> int:
    """A job priority within what the store keeps."""
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidRequest(
            f"{param} must be between {PRIORITY_MIN} and {PRIORITY_MAX}; got {priority}",
            param=param,
        )
    return priority
