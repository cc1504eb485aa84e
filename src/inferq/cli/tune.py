"""``inferq tune``: measure the llama.cpp settings that run fastest on this machine, show
them, and write them to ``<data dir>/tuning.toml``, where ``inferq serve`` and ``inferq
worker`` pick them up at their next start (:mod:`inferq.engines.tuning`; how it measures:
:mod:`inferq.engines.tuning_search`)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from inferq.cli.common import (
    DataDir,
    LogLevel,
    ModelsFile,
    configure_logging,
    fail,
    load_models,
    out,
    reporting,
    run,
    settings,
)

if TYPE_CHECKING:
    from inferq.engines.tuning import EngineSettings
    from inferq.engines.tuning_search import Outcome, Trial


def tune(
    models: ModelsFile = None,
    data_dir: DataDir = None,
    budget: Annotated[
        float, typer.Option(min=10, help="Seconds to spend, all models together.")
    ] = 300.0,
    quick: Annotated[
        bool, typer.Option("--quick", help="Seconds, not minutes: a tiny workload (tests).")
    ] = False,
    log_level: LogLevel = None,
) -> None:
    """Measure slots, flash attention, batch size and threads of the llama.cpp chat models
    on this machine; write the fastest where serve picks them up."""
    from inferq.engines.registry import configured_options
    from inferq.engines.tuning import cpu_name, tunable, tuning_file, write_file
    from inferq.engines.tuning_search import noisy, tune_models

    config = settings(models_file=models, data_dir=data_dir, log_level=log_level or "warning")
    configure_logging(config)
    specs = [spec for spec in load_models(config).values() if tunable(spec)]
    if not specs:
        fail("the models file has no llama.cpp chat model to tune", 2)
    with reporting(2):
        explicit = configured_options(config.models_file)
    took = "a few seconds" if quick else f"about {budget:.0f} s"
    out.print(
        f"Tuning {', '.join(s.name for s in specs)} on {cpu_name()}, "
        f"{os.cpu_count()} cores ({took}).",
        highlight=False,
    )
    outcomes = run(tune_models(specs, explicit, budget=budget, quick=quick, report=_progress))
    for outcome in outcomes:
        out.print(_table(outcome))
        out.print(_verdict(outcome), highlight=False)
    others = max((t.others or 0.0 for o in outcomes for t in o.trials), default=0.0)
    if noisy(others):
        out.print(
            f"[yellow]Other processes used up to {others:.2f} cores during a trial: "
            "on a quiet machine the numbers may differ; run it again then.[/yellow]"
        )
    path = tuning_file(config.data_dir)
    write_file(path, {outcome.model: outcome.entry() for outcome in outcomes})
    out.print(f"Wrote {path}: inferq serve and inferq worker apply it at their next start.")


def _progress(model: str, trial: Trial) -> None:
    result = f"{trial.rate:.1f} tokens/s" if trial.rate is not None else trial.error
    out.print(f"[dim]  {model} {trial.step}: {_settings(trial)}: {result}[/dim]", highlight=False)


def _settings(trial: Trial) -> str:
    s = trial.settings
    flash = "on" if s.flash_attention else "off"
    return f"{s.slots} slots, flash attention {flash}, batch {s.batch_size}, threads {s.threads}"


def _mean_rate(outcome: Outcome, settings: EngineSettings) -> float | None:
    """The mean rate of the confirmation runs of ``settings``; None without any."""
    rates = [
        t.rate
        for t in outcome.trials
        if t.step == "confirm" and t.settings == settings and t.rate is not None
    ]
    return sum(rates) / len(rates) if rates else None


def _table(outcome: Outcome) -> Table:
    first = next(t.rate for t in outcome.trials if t.step == "baseline") or 1.0
    confirmed = _mean_rate(outcome, outcome.baseline) or first
    table = Table(
        "step",
        "slots",
        "flash attention",
        "batch size",
        "threads",
        "output tok/s",
        "vs baseline",
        "other CPU (cores)",
        title=f"{outcome.model} (window {outcome.window:.1f} s per trial)",
        caption="vs baseline: in the search, against the baseline's trial; in the "
        "confirmation, against the mean of the baseline's confirmation runs",
    )
    for t in outcome.trials:
        s = t.settings
        base = confirmed if t.step == "confirm" else first
        table.add_row(
            t.step if t.attempts == 1 else f"{t.step} (taken twice)",
            str(s.slots),
            "on" if s.flash_attention else "off",
            str(s.batch_size),
            str(s.threads),
            f"{t.rate:.1f}" if t.rate is not None else t.error,
            f"{t.rate / base:.2f}" if t.rate is not None else "",
            f"{t.others:.2f}" if t.others is not None else "",
        )
    return table


def _verdict(outcome: Outcome) -> str:
    from inferq.engines.tuning import describe
    from inferq.engines.tuning_search import MARGIN

    changed = {k: v for k, v in outcome.winner.values().items() if v != outcome.baseline.get(k)}
    if not changed:
        return f"{outcome.model}: the baseline was fastest; kept."
    winner, baseline = _mean_rate(outcome, outcome.winner), _mean_rate(outcome, outcome.baseline)
    rates = f" ({winner:.1f} against {baseline:.1f} tokens/s)" if winner and baseline else ""
    if outcome.chosen == outcome.winner:
        return (
            f"{outcome.model}: chose {describe(changed)}: {outcome.gain:+.0%} output tokens/s "
            f"over the baseline in the confirmation runs{rates}."
        )
    fastest = (
        f"{outcome.model}: kept the baseline: the fastest ({describe(changed)}) was "
        f"{outcome.gain:+.0%} in the confirmation runs{rates}"
    )
    if outcome.gain < MARGIN:
        return f"{fastest}, under the {MARGIN:.0%} margin."
    return (
        f"{fastest}, but other processes used up to {outcome.disturbed:.2f} cores during the "
        "baseline's, which makes a gain look larger: run inferq tune again on a quiet machine."
    )
