"""Named SQL queries, one file per SQL dialect, and the migrations beside them.

A query file holds blocks headed ``-- name: <query_name>``; adapters look queries
up by name, so the Python code never builds SQL. The queries whose SQL is the same
for every dialect are written once, in ``common.sql``; ``<dialect>/queries.sql``
holds the rest. Migrations are files named ``NNNN_<what>.sql`` in
``<dialect>/migrations/``, applied in order once each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from inferq.core.errors import StoreError

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_queries(dialect: str) -> dict[str, str]:
    """The named queries of ``common.sql`` and ``<dialect>/queries.sql``."""
    common = _named_queries("common.sql")
    own = _named_queries(dialect, "queries.sql")
    if both := common.keys() & own.keys():
        raise StoreError(f"queries named both in common.sql and in {dialect}: {sorted(both)}")
    return common | own


def _named_queries(*path: str) -> dict[str, str]:
    text = resources.files(__package__).joinpath(*path).read_text("utf-8")
    parts = _HEADER.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def check_version(current: int, migrations: list[Migration]) -> int:
    """The newest version this code knows; StoreError for a database newer than that."""
    known = migrations[-1].version if migrations else 0
    if current > known:
        raise StoreError(
            f"the database schema is version {current}, newer than this inferq knows "
            f"({known}); upgrade inferq"
        )
    return known


def first_keyword(sql: str) -> str:
    """The statement's first word after its comment lines: ``SELECT``, ``UPDATE``, …"""
    for line in sql.splitlines():
        line = line.strip()
        if line and not line.startswith("--"):
            return line.split(None, 1)[0].upper()
    return ""


def load_migrations(dialect: str) -> list[Migration]:
    """The migrations of ``<dialect>/migrations/``, oldest first."""
    folder = resources.files(__package__).joinpath(dialect, "migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(
                Migration(int(number), rest.removesuffix(".sql"), entry.read_text("utf-8"))
            )
    return sorted(found, key=lambda m: m.version)
