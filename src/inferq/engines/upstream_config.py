"""The settings of an ``openai_upstream`` model, read from its models-file table.

Per endpoint (``[[models."<name>".endpoints]]``, at least one):

- ``base_url`` (required): the API root, e.g. ``http://gpu1:8000/v1``
- ``api_key_env``: the environment variable holding the key, read at start
- ``model``: the upstream's name for the model; default: the inferq name
- ``max_concurrency``: requests it runs at once; default 1
- ``priority``: how to forward priority: ``"vllm"`` (lower first), ``"sglang"``
  (higher first) or ``"none"`` (the default)

Per model, all optional: ``max_attempts`` (4), ``backoff`` (0.5 s, doubled per
attempt), ``max_backoff`` (8 s), ``max_retry_after`` (60 s), ``health_interval``
(5 s), ``health_timeout`` (5 s), ``unhealthy_after`` (2 failed checks),
``connect_timeout`` (5 s), ``read_timeout`` (600 s between two bytes),
``wait_for_endpoint`` (30 s with no healthy endpoint before failing), and
``dimensions`` for an embedding model (learned from the first answer otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from inferq.core.errors import ConfigError

PRIORITY_CONVENTIONS = ("none", "vllm", "sglang")
ENDPOINT_KEYS = ("base_url", "api_key_env", "model", "max_concurrency", "priority")


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    base_url: str
    model: str
    max_concurrency: int = 1
    api_key_env: str | None = None
    priority: str = "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamSettings:
    endpoints: tuple[EndpointConfig, ...]
    max_attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0
    max_retry_after: float = 60.0
    health_interval: float = 5.0
    health_timeout: float = 5.0
    unhealthy_after: int = 2
    connect_timeout: float = 5.0
    read_timeout: float = 600.0
    wait_for_endpoint: float = 30.0
    dimensions: int | None = None

    @property
    def slots(self) -> int:
        """Requests the model runs at once: the sum of the endpoints' concurrency."""
        return sum(endpoint.max_concurrency for endpoint in self.endpoints)


_INTEGERS = {"max_attempts": 1, "unhealthy_after": 1, "dimensions": 1}
_SECONDS = {
    "backoff": 0.0,
    "max_backoff": 0.0,
    "max_retry_after": 0.0,
    "health_interval": 0.01,
    "health_timeout": 0.01,
    "connect_timeout": 0.01,
    "read_timeout": 0.01,
    "wait_for_endpoint": 0.0,
}
#: model options that are not this engine's settings but are allowed beside them
_OTHER_OPTIONS = frozenset({"endpoints", "embedding"})


def parse_settings(name: str, options: Mapping[str, Any]) -> UpstreamSettings:
    """The settings in ``options`` (a model's table without engine, context_length and
    slots); ConfigError naming the model and the key when something is wrong."""
    known = {f.name for f in fields(UpstreamSettings)} - {"endpoints"}
    unknown = sorted(set(options) - known - _OTHER_OPTIONS)
    if unknown:
        raise ConfigError(
            f"model {name!r}: unknown option {unknown[0]!r} for engine openai_upstream; "
            f"known: endpoints, embedding, {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for key, minimum in _INTEGERS.items():
        if key in options:
            values[key] = _integer(name, key, options[key], minimum)
    for key, low in _SECONDS.items():
        if key in options:
            values[key] = _seconds(name, key, options[key], low)
    return UpstreamSettings(endpoints=_endpoints(name, options.get("endpoints")), **values)


def _endpoints(name: str, value: Any) -> tuple[EndpointConfig, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"model {name!r}: engine openai_upstream needs at least one endpoint: "
            f'[[models."{name}".endpoints]] with base_url = "http://host:port/v1"'
        )
    return tuple(_endpoint(name, i, entry) for i, entry in enumerate(value, start=1))


def _endpoint(name: str, number: int, entry: Any) -> EndpointConfig:
    where = f"model {name!r}, endpoint {number}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table")
    if "api_key" in entry:
        raise ConfigError(
            f"{where}: keep the key out of the models file: put it in an environment "
            "variable and name that variable in api_key_env"
        )
    unknown = sorted(set(entry) - set(ENDPOINT_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(ENDPOINT_KEYS)}")
    base_url = entry.get("base_url")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"{where}: base_url must be an http:// or https:// URL, like http://host:8000/v1"
        )
    if not base_url.partition("://")[2].split("/", 1)[0]:
        raise ConfigError(f"{where}: base_url {base_url!r} names no host")
    model = entry.get("model", name)
    if not isinstance(model, str) or not model:
        raise ConfigError(f"{where}: model must be a non-empty string (the upstream's name)")
    key_env = entry.get("api_key_env")
    if key_env is not None and (not isinstance(key_env, str) or not key_env):
        raise ConfigError(f"{where}: api_key_env must name an environment variable")
    priority = entry.get("priority", "none")
    if priority not in PRIORITY_CONVENTIONS:
        raise ConfigError(
            f"{where}: priority is one of {', '.join(map(repr, PRIORITY_CONVENTIONS))}, "
            f"not {priority!r}"
        )
    return EndpointConfig(
        base_url=base_url,
        model=model,
        max_concurrency=_integer(where, "max_concurrency", entry.get("max_concurrency", 1), 1),
        api_key_env=key_env,
        priority=priority,
    )


def _integer(where: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{_place(where)}: {key} must be an integer >= {minimum}, not {value!r}")
    return value


def _seconds(where: str, key: str, value: Any, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ConfigError(
            f"{_place(where)}: {key} must be a number of seconds >= {minimum}, not {value!r}"
        )
    return float(value)


def _place(where: str) -> str:
    return where if where.startswith("model ") else f"model {where!r}"
