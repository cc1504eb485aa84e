"""Tuned llama.cpp settings: the file ``inferq tune`` writes and ``inferq serve`` applies.

Flash attention and the slot count gain from nothing to a quarter more tokens/s
depending on the CPU (docs/benchmarks.md), so fixed defaults leave throughput
behind on some machines. ``inferq tune`` measures the candidates on the machine
itself (:mod:`inferq.engines.tuning_search`: the engine that serve runs, kept
saturated for a fixed window per candidate, a coordinate search over
``slots``, ``flash_attention``, ``batch_size`` and ``threads``, the winner kept
only when it beats the defaults by 5% in a confirmation round) and writes the
result here.

The file, ``<data dir>/tuning.toml``: one table per model with the settings
chosen (only the options that were searched), the gain measured, the date, and
the fingerprint of what was measured: the CPU's model name, the core count, the
llama-cpp-python version and the GGUF file (path, size, modification time)::

    version = 1

    [models."smollm2-135m-instruct"]
    gain = 0.12
    tuned_at = "2026-12-05T10:12:00Z"
    cpu = "Intel(R) Xeon(R) Processor"
    cores = 2
    llama_cpp = "0.3.36"
    model_file = "/.../SmolLM2-135M-Instruct.Q4_1.gguf"
    model_size = 98765432
    model_mtime_ns = 1764000000000000000

    [models."smollm2-135m-instruct".settings]
    slots = 16
    flash_attention = true
    batch_size = 128
    threads = "auto"

:func:`apply_tuning`, called by the registry when ``inferq serve`` or ``inferq
worker`` loads its models (not by the one-shot commands), gives each configured
llama.cpp chat model its tuned settings except the options its models file sets
(explicit configuration wins), and logs them. A file that does not parse or
holds a bad value is ignored whole, and an entry whose fingerprint differs from
this machine and model file is ignored (stale); either way with one warning
line naming why. Entries of models that are not configured are left alone, and
``inferq tune`` keeps them when it writes the file. Delete the file to go back
to the defaults. On a fleet that shares its data directory, the file describes
the machine it was measured on: a worker on another CPU ignores it, with the
warning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import tomllib
from collections.abc import Mapping, Set
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from inferq.core.errors import ConfigError
from inferq.engines.base import ModelSpec, is_embedding
from inferq.engines.llamacpp import DEFAULT_BATCH_SIZE, decoder_config, default_model_path

log = logging.getLogger(__name__)

FILE_NAME = "tuning.toml"
FORMAT_VERSION = 1
#: the options searched, in search order
SEARCHED = ("slots", "flash_attention", "batch_size", "threads")

Value = int | bool | str


def tuning_file(data_dir: Path) -> Path:
    return data_dir / FILE_NAME


def tunable(spec: ModelSpec) -> bool:
    """Whether ``spec`` is a chat model on the llama.cpp engine."""
    return spec.engine == "llamacpp" and not is_embedding(spec)


def model_path(spec: ModelSpec) -> Path:
    raw = spec.options.get("path")
    return Path(raw).expanduser() if raw else default_model_path()


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineSettings:
    """The searched options of a llama.cpp chat model; ``threads`` is a number or "auto"."""

    slots: int
    flash_attention: bool
    batch_size: int
    threads: int | str

    @classmethod
    def of(cls, spec: ModelSpec) -> EngineSettings:
        config = decoder_config(spec)  # raises ConfigError on a bad option
        return cls(
            slots=config.slots,
            flash_attention=config.flash_attention,
            batch_size=int(spec.options.get("batch_size", DEFAULT_BATCH_SIZE)),
            threads="auto" if config.tune_threads else config.threads,
        )

    def get(self, option: str) -> Value:
        value: Value = getattr(self, option)
        return value

    def but(self, option: str, value: Value) -> EngineSettings:
        """These settings with ``option`` set to ``value``."""
        if isinstance(value, bool):
            if option == "flash_attention":
                return dataclasses.replace(self, flash_attention=value)
        elif isinstance(value, int):
            if option == "slots":
                return dataclasses.replace(self, slots=value)
            if option == "batch_size":
                return dataclasses.replace(self, batch_size=value)
            if option == "threads":
                return dataclasses.replace(self, threads=value)
        elif option == "threads":
            return dataclasses.replace(self, threads=value)
        raise ValueError(f"{option} = {value!r} is not a setting")

    def values(self, options: Set[str] = frozenset(SEARCHED)) -> dict[str, Value]:
        return {name: self.get(name) for name in SEARCHED if name in options}


def with_settings(spec: ModelSpec, values: Mapping[str, Value]) -> ModelSpec:
    """``spec`` with ``values`` (options of :data:`SEARCHED`) set."""
    options = {**spec.options, **{k: v for k, v in values.items() if k != "slots"}}
    slots = values.get("slots", spec.slots)
    return dataclasses.replace(spec, slots=int(slots), options=options)


def describe(values: Mapping[str, Value]) -> str:
    return ", ".join(f"{name} {_toml(value)}" for name, value in values.items())


# -- the fingerprint and the file -------------------------------------------------------


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class Fingerprint:
    """What a measurement holds for: this CPU, its cores, this llama.cpp, this GGUF file."""

    cpu: str
    cores: int
    llama_cpp: str
    model_file: str
    model_size: int
    model_mtime_ns: int

    @classmethod
    def of(cls, model_file: Path) -> Fingerprint:
        """The fingerprint here and now; OSError when the model file is not there."""
        stat = model_file.stat()
        try:
            version = metadata.version("llama-cpp-python")
        except metadata.PackageNotFoundError:
            version = "absent"
        return cls(
            cpu=cpu_name(),
            cores=os.cpu_count() or 1,
            llama_cpp=version,
            model_file=str(model_file),
            model_size=stat.st_size,
            model_mtime_ns=stat.st_mtime_ns,
        )

    def mismatch(self, now: Fingerprint) -> str | None:
        """The first difference from ``now``, in words; None when there is none."""
        for field in dataclasses.fields(self):
            then, here = getattr(self, field.name), getattr(now, field.name)
            if then != here:
                return f"{field.name} was {then!r}, is now {here!r}"
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Tuned:
    """One model's entry of the tuning file."""

    #: the chosen values of the options that were searched
    settings: dict[str, Value]
    #: how much faster the search's winner was than the baseline (0: the baseline won)
    gain: float
    #: when, in UTC (ISO 8601)
    tuned_at: str
    fingerprint: Fingerprint


def read_file(path: Path) -> dict[str, Tuned]:
    """The entries of a tuning file; ConfigError naming the problem when it is bad."""
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"tuning file {path} could not be read: {exc}") from exc
    if data.get("version") != FORMAT_VERSION:
        raise ConfigError(
            f"tuning file {path} has version {data.get('version')!r}, not {FORMAT_VERSION}"
        )
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"tuning file {path}: models is not a table")
    try:
        return {name: _entry(entry) for name, entry in models.items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"tuning file {path}: a bad entry ({exc})") from exc


def _entry(entry: Any) -> Tuned:
    settings = dict(entry["settings"])
    for name, value in settings.items():
        _check_setting(name, value)
    fp = {f.name: entry[f.name] for f in dataclasses.fields(Fingerprint)}
    for name in ("cores", "model_size", "model_mtime_ns"):
        if type(fp[name]) is not int:
            raise TypeError(f"{name} is {fp[name]!r}, not a whole number")
    for name in ("cpu", "llama_cpp", "model_file"):
        if not isinstance(fp[name], str):
            raise TypeError(f"{name} is {fp[name]!r}, not a string")
    gain, tuned_at = entry["gain"], entry["tuned_at"]
    if type(gain) not in (int, float) or not isinstance(tuned_at, str):
        raise TypeError("gain is a number and tuned_at a string")
    return Tuned(
        settings=settings, gain=float(gain), tuned_at=tuned_at, fingerprint=Fingerprint(**fp)
    )


def _check_setting(name: str, value: Any) -> None:
    whole = type(value) is int and value >= 1
    ok = {
        "slots": whole,
        "batch_size": whole,
        "flash_attention": isinstance(value, bool),
        "threads": whole or value == "auto",
    }.get(name)
    if ok is None:
        raise ValueError(f"unknown setting {name!r}")
    if not ok:
        raise ValueError(f"setting {name} = {value!r}")


def write_file(path: Path, entries: Mapping[str, Tuned]) -> None:
    """Write ``entries`` in place of the file's entries of those models, keeping the
    others (a bad file is replaced); atomically, ``0600``, in a ``0700`` directory."""
    merged: dict[str, Tuned] = {}
    if path.exists():
        try:
            merged = read_file(path)
        except ConfigError as exc:
            log.warning("%s; replacing it", exc.message)
    merged.update(entries)
    lines = [
        f"# Written by inferq tune ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC). inferq serve and",
        "# inferq worker apply each model's settings unless its models file sets the option.",
        f"version = {FORMAT_VERSION}",
    ]
    for name, tuned in merged.items():
        table = f"models.{_toml(name)}"
        lines += ["", f"[{table}]", f"gain = {round(tuned.gain, 4)!r}"]
        lines.append(f"tuned_at = {_toml(tuned.tuned_at)}")
        lines += [f"{k} = {_toml(v)}" for k, v in dataclasses.asdict(tuned.fingerprint).items()]
        lines += ["", f"[{table}.settings]"]
        lines += [f"{k} = {_toml(v)}" for k, v in tuned.settings.items()]
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(temporary, path)


def _toml(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    # a JSON string is a TOML basic string, but for DEL, which TOML wants escaped
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def apply_tuning(
    specs: dict[str, ModelSpec], explicit: Mapping[str, Set[str]], path: Path
) -> dict[str, ModelSpec]:
    """``specs`` with the tuned settings of ``path`` (when it exists) applied, except the
    options ``explicit`` lists for a model (those its models file sets). Without the
    file, one line says that the llama.cpp chat models run their defaults and how to
    measure this machine's best settings."""
    if not path.exists():
        untuned = sorted(name for name, spec in specs.items() if tunable(spec))
        if untuned:
            log.info(
                "no tuning file at %s: the default llama.cpp settings apply to %s "
                "(inferq tune measures this machine's best)",
                path,
                ", ".join(untuned),
            )
        return specs
    try:
        entries = read_file(path)
    except ConfigError as exc:
        log.warning("%s; ignored (run inferq tune again)", exc.message)
        return specs
    applied = dict(specs)
    for name, tuned in entries.items():
        spec = specs.get(name)
        if spec is None:
            continue
        reason = _stale(spec, tuned)
        if reason is not None:
            log.warning(
                "tuning file %s: the settings of %s are ignored: %s (run inferq tune again)",
                path,
                name,
                reason,
            )
            continue
        kept = {k: v for k, v in tuned.settings.items() if k not in explicit.get(name, ())}
        applied[name] = with_settings(spec, kept)
        log.info(
            "model %s: settings from inferq tune (%s): %s", name, tuned.tuned_at, describe(kept)
        )
    return applied


def _stale(spec: ModelSpec, tuned: Tuned) -> str | None:
    if not tunable(spec):
        return "it is no longer a llama.cpp chat model"
    try:
        now = Fingerprint.of(model_path(spec))
    except (OSError, ConfigError) as exc:
        return f"its model file cannot be read ({exc})"
    return tuned.fingerprint.mismatch(now)
