"""What ``inferq tune`` measures and how it searches (the file: :mod:`inferq.engines.tuning`).

The measurement. Each trial starts inferq's own engine
(:class:`~inferq.engines.llamacpp.LlamaCppEngine`, so the same ``decoder_config``
and ``BatchDecoder`` that ``inferq serve`` runs) with the candidate's settings,
sends one warm-up request, then keeps it saturated: ``slots + 2`` lanes each
hand it one greedy request after another, the same rows in every trial (prompts
of about 30 to 200 tokens with the chat template; from 16 to 112 new tokens, so
that sequences end at different steps and others join, as under real load).
The first requests all start together, and their prompts are evaluated one
chunk a step while the others wait, a start-up that costs more the more slots
there are; so counting begins once as many requests as there are slots have
ended (at most one window after the start). Then the text pieces the engine
streams are counted for a fixed window (one a token, but for the rare
character split across two): the score is that count over the window, output
tokens/s in the steady state. Each trial also records the cores other
processes used during the window (Linux): a 2-core machine shared with other
work measures that work too.

The search, coordinate by coordinate from the baseline (what serve runs without
a tuning file): ``slots`` (4, 8, 16), then ``flash_attention`` (off, on), then
``batch_size`` (64, 128, 256), then ``threads`` ("auto", half the cores, when
there are two or more); each step keeps its fastest value and the next starts
from it. An option that the models file sets is not searched: explicit
configuration wins. The winner and the baseline are then measured again, twice
each in the order winner, baseline, baseline, winner (a load that rises or
falls meanwhile hits both alike; the search's own number of the winner is the
best of several, biased up). The winner is chosen only if the mean of its
confirmation runs beats the baseline's by :data:`MARGIN` and no other work
disturbed the baseline's runs (which would make the gain look larger; during
the winner's runs it only makes the margin harder to reach), otherwise the
baseline is.

The budget (seconds, all models together; ``inferq tune`` defaults to 300) is
shared out among the models and sets the window from the trials planned (11 for
one model with nothing set in the models file, and one to spare): each trial is
taken as :data:`START_SECONDS` for the engine's start, then at most a window
before counting and a window counting. A trial that would not leave time for
the confirmation (at the mean time of the trials so far) is skipped. A trial
during which other processes used more than :data:`NOISY_SHARE` of the cores
(0.25 of 2) is taken
again, after waiting up to :data:`QUIET_PATIENCE` seconds for them to calm
down, when that still leaves time for every trial planned; the quieter of the
two counts.

``quick`` (for tests): 1.5 s windows of 4 to 28 new tokens a request, slots 4
and flash attention only, one confirmation run each, no trial taken twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime

from inferq.core.errors import EngineError, InferqError
from inferq.core.work import ChatMessage, ChatRequest
from inferq.engines.base import AbortSignal, ModelSpec
from inferq.engines.llamacpp import LlamaCppEngine
from inferq.engines.tuning import (
    EngineSettings,
    Fingerprint,
    Tuned,
    Value,
    model_path,
    with_settings,
)

#: how much faster than the baseline the winner must be to be chosen
MARGIN = 0.05
#: the engine's start, warm-up and close, assumed per trial when sizing the window
START_SECONDS = 3.0
MIN_WINDOW = 5.0
#: the share of the cores other processes may use during a trial before it is taken
#: again (0.25 of 2 cores), and before the baseline's confirmation runs count as disturbed
NOISY_SHARE = 0.125
#: the most seconds to wait for them to calm down first
QUIET_PATIENCE = 30.0

TOPICS = (
    "a lighthouse keeper who finds a message in a bottle",
    "the first day of a new baker in a busy town",
    "a robot learning to paint",
    "two friends crossing a desert",
    "a library that is open only at night",
    "a gardener who grows a giant pumpkin",
    "a ship's cat during a storm",
    "a child who builds a kite from old newspapers",
)
NOTES = (
    "The morning was cold and the sky was grey over the water.",
    "Nobody in the village had seen anything like it before.",
    "There was an old map folded in a drawer of the kitchen table.",
    "The wind carried the smell of salt and bread through the streets.",
    "A small dog followed them everywhere and barked at every bird.",
    "By noon the market was full of voices, carts and bright colours.",
    "Someone had left a lamp burning in the window of the tower.",
    "The letter was written in a careful hand, with one word underlined.",
    "Rain began to fall just as the last train left the station.",
    "At the end of the day everyone sat together and told the story again.",
)


def prompt(i: int) -> str:
    """Row ``i``'s user message: a topic and 1 to 10 sentences of notes."""
    notes = " ".join(NOTES[(i + k) % len(NOTES)] for k in range(1 + (i * 7) % len(NOTES)))
    return f"Write a short story about {TOPICS[i % len(TOPICS)]}. Use these notes: {notes}"


def _request(i: int, max_tokens: int) -> ChatRequest:
    """Row ``i``: its prompt, and from a quarter to 7/4 of ``max_tokens`` new tokens, so
    that sequences end at different steps as real requests do."""
    limit = max(1, max_tokens // 4 + (i * 37) % (max_tokens * 3 // 2 + 1))
    message = ChatMessage("user", prompt(i))
    return ChatRequest(messages=(message,), max_tokens=limit, temperature=0.0)


def noisy(others: float | None) -> bool:
    """Whether other processes using ``others`` cores disturb a measurement."""
    return others is not None and others > NOISY_SHARE * (os.cpu_count() or 1)


def _wait_until_quiet(patience: float) -> None:
    """Wait until other processes calm down (:func:`noisy`, over a second), at most
    ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        before = _busy_cpu_seconds()
        time.sleep(1.0)
        after = _busy_cpu_seconds()
        if before is None or after is None or not noisy(after - before):
            return


def _busy_cpu_seconds() -> float | None:
    """CPU time the whole machine has spent busy so far (Linux), else None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    #: seconds each trial keeps the engine saturated
    window: float
    max_tokens: int = 64


class _Saturation:
    """Lanes that each keep one request in the engine, and a count of the text pieces the
    engine streams (one a token but for the rare character split across two) while
    :attr:`counting`."""

    def __init__(self, engine: LlamaCppEngine, max_tokens: int) -> None:
        self.engine = engine
        self.max_tokens = max_tokens
        self.rows = itertools.count()
        self.live: set[AbortSignal] = set()
        self.stopped = False
        #: set once as many requests as there are slots have ended: the first ones,
        #: which all started together, have given way to others that did not
        self.turned_over = asyncio.Event()
        self._ended = 0
        self.counting = False
        self.pieces = 0

    async def lane(self) -> None:
        while not self.stopped:
            abort = AbortSignal()
            self.live.add(abort)
            try:
                request = _request(next(self.rows), self.max_tokens)
                await self.engine.generate(request, abort=abort, on_text=self._piece)
            finally:
                self.live.discard(abort)
            self._ended += 1
            if self._ended >= self.engine.spec.slots:
                self.turned_over.set()

    def _piece(self, piece: str) -> None:
        if self.counting:
            self.pieces += 1

    def stop(self) -> None:
        self.counting = False
        self.stopped = True
        for abort in self.live:
            abort.set()


async def measure(spec: ModelSpec, workload: Workload) -> tuple[float, float | None]:
    """Output tokens/s of ``spec`` kept saturated, counted for ``workload.window`` seconds
    once the first requests have turned over (at most ``window`` seconds after the start),
    and the cores other processes used meanwhile."""
    engine = LlamaCppEngine(spec)
    await engine.start()
    saturation = _Saturation(engine, workload.max_tokens)
    lanes: list[asyncio.Task[None]] = []
    try:
        await engine.generate(_request(-1, 4), abort=AbortSignal())  # warm-up
        lanes = [asyncio.create_task(saturation.lane()) for _ in range(spec.slots + 2)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(saturation.turned_over.wait(), workload.window)
        own0, busy0, t0 = time.process_time(), _busy_cpu_seconds(), time.perf_counter()
        saturation.counting = True
        await asyncio.sleep(workload.window)
        saturation.stop()
        wall = time.perf_counter() - t0
        own, busy1 = time.process_time() - own0, _busy_cpu_seconds()
        await asyncio.gather(*lanes)  # a lane's engine error fails the trial
    finally:
        saturation.stop()
        await asyncio.gather(*lanes, return_exceptions=True)
        await engine.close()
    others = None
    if busy0 is not None and busy1 is not None:
        others = max(0.0, (busy1 - busy0 - own) / wall)
    return saturation.pieces / wall, others


# -- the search -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    #: the values tried for each searched option, in search order
    candidates: dict[str, tuple[Value, ...]]
    workload: Workload
    #: confirmation runs of the winner and of the baseline
    rounds: int
    #: the trials planned: the baseline, the candidates, the confirmation
    trials: int
    #: whether a trial that other processes disturbed is taken again
    retry_noisy: bool = True


def plan(spec: ModelSpec, explicit: Set[str], *, budget: float, quick: bool) -> Plan:
    """What to try for ``spec`` within ``budget`` seconds, leaving ``explicit`` options."""
    cores = os.cpu_count() or 1
    choices: dict[str, tuple[Value, ...]] = {
        "slots": (4, 8, 16),
        "flash_attention": (False, True),
        "batch_size": (64, 128, 256),
        "threads": ("auto", cores // 2) if cores > 1 else (),
    }
    if quick:
        choices = {"slots": (4,), "flash_attention": (False, True)}
    candidates = {k: v for k, v in choices.items() if v and k not in explicit}
    baseline = EngineSettings.of(spec)
    rounds = 1 if quick else 2
    trials = 1 + 2 * rounds
    trials += sum(
        len([v for v in values if v != baseline.get(k)]) for k, values in candidates.items()
    )
    if quick:
        load = Workload(window=1.5, max_tokens=16)
        return Plan(
            candidates=candidates, workload=load, rounds=1, trials=trials, retry_noisy=False
        )
    # one trial's time to spare: a trial that runs long must not crowd out the last one
    window = max(MIN_WINDOW, (budget / (trials + 1) - START_SECONDS) / 2)
    return Plan(
        candidates=candidates, workload=Workload(window=window), rounds=rounds, trials=trials
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Trial:
    #: "baseline", the option searched, or "confirm"
    step: str
    settings: EngineSettings
    #: output tokens/s; None when the trial did not run or failed (see ``error``)
    rate: float | None
    #: cores other processes used during the window; None where unknown
    others: float | None = None
    error: str = ""
    #: 2 when a first measurement, taken while other processes were busy, was redone
    attempts: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """One model's search."""

    model: str
    baseline: EngineSettings
    #: the search's fastest settings
    winner: EngineSettings
    #: the winner's mean confirmation rate over the baseline's, less 1 (0 when the
    #: winner is the baseline)
    gain: float
    #: the most cores other processes used during a confirmation run of the baseline
    disturbed: float
    #: the winner when ``gain`` reaches :data:`MARGIN` and the baseline's confirmation
    #: runs were not disturbed (:func:`noisy`), else the baseline
    chosen: EngineSettings
    searched: frozenset[str]
    fingerprint: Fingerprint
    trials: tuple[Trial, ...]
    #: seconds each trial kept the engine saturated
    window: float
    tuned_at: str = field(default_factory=lambda: f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}")

    def entry(self) -> Tuned:
        """The tuning file's entry: the chosen values of the searched options."""
        return Tuned(
            settings=self.chosen.values(self.searched),
            gain=self.gain if self.chosen == self.winner else 0.0,
            tuned_at=self.tuned_at,
            fingerprint=self.fingerprint,
        )


Report = Callable[[str, Trial], None]


class _Search:
    def __init__(self, spec: ModelSpec, plan: Plan, deadline: float, report: Report) -> None:
        self.spec = spec
        self.plan = plan
        self.deadline = deadline
        self.report = report
        self.trials: list[Trial] = []
        #: how long each measurement took
        self.durations: list[float] = []
        #: the trials planned that are still to come
        self.left = plan.trials

    async def trial(self, step: str, settings: EngineSettings) -> float | None:
        """Measure ``settings``; once more, after a wait for a quiet machine, when other
        processes disturbed it (:func:`noisy`) and time allows (the quieter counts)."""
        done = await self._measure(step, settings)
        if (
            noisy(done.others)
            and self.plan.retry_noisy
            and self.affordable(QUIET_PATIENCE, self.left)
        ):
            await asyncio.to_thread(_wait_until_quiet, QUIET_PATIENCE)
            again = await self._measure(step, settings)
            if again.rate is not None and (again.others or 0.0) < (done.others or 0.0):
                done = dataclasses.replace(again, attempts=2)
        return self._record(done)

    async def _measure(self, step: str, settings: EngineSettings) -> Trial:
        started = time.monotonic()
        try:
            spec = with_settings(self.spec, settings.values())
            rate, others = await measure(spec, self.plan.workload)
            done = Trial(step=step, settings=settings, rate=rate, others=others)
        except InferqError as exc:
            done = Trial(step=step, settings=settings, rate=None, error=exc.message)
        self.durations.append(time.monotonic() - started)
        return done

    def _record(self, trial: Trial) -> float | None:
        self.trials.append(trial)
        self.left -= 1
        self.report(self.spec.name, trial)
        return trial.rate

    def affordable(self, wait: float = 0.0, trials: int | None = None) -> bool:
        """Whether ``wait`` seconds and ``trials`` measurements (by default one more and
        the confirmation) fit before the deadline, at the mean time of those so far."""
        count = 1 + 2 * self.plan.rounds if trials is None else trials
        typical = sum(self.durations) / len(self.durations) if self.durations else 0.0
        return time.monotonic() + wait + count * typical <= self.deadline

    async def best_of(
        self, option: str, start: EngineSettings, rate: float
    ) -> tuple[EngineSettings, float]:
        """The fastest of ``start`` (measured at ``rate``) and its variants in ``option``."""
        scores = {start.get(option): rate}
        for value in self.plan.candidates[option]:
            if value in scores:
                continue
            candidate = start.but(option, value)
            if not self.affordable():
                self._record(Trial(step=option, settings=candidate, rate=None, error="skipped"))
                continue
            score = await self.trial(option, candidate)
            if score is not None:
                scores[value] = score
        value = max(scores, key=lambda v: scores[v])
        return start.but(option, value), scores[value]

    async def confirm(self, winner: EngineSettings, baseline: EngineSettings) -> float:
        mine: list[float | None] = []
        theirs: list[float | None] = []
        for k in range(self.plan.rounds):  # ABBA: a load that drifts hits both alike
            if k % 2 == 0:
                mine.append(await self.trial("confirm", winner))
                theirs.append(await self.trial("confirm", baseline))
            else:
                theirs.append(await self.trial("confirm", baseline))
                mine.append(await self.trial("confirm", winner))
        made = sum(x or 0.0 for x in theirs)
        # not measured, or the baseline made nothing in its windows (a machine too busy
        # to tell): no gain to claim, the defaults stay
        if None in mine or None in theirs or made <= 0:
            return -1.0
        return sum(x or 0.0 for x in mine) / made - 1


async def tune(
    spec: ModelSpec, plan: Plan, *, deadline: float, report: Report = lambda m, t: None
) -> Outcome:
    """Search the settings of ``spec`` (see the module's docstring)."""
    fingerprint = Fingerprint.of(model_path(spec))
    search = _Search(spec, plan, deadline, report)
    baseline = EngineSettings.of(spec)
    rate = await search.trial("baseline", baseline)
    if rate is None:
        raise EngineError(f"model {spec.name}: {search.trials[-1].error}")
    best = baseline
    for option in plan.candidates:
        best, rate = await search.best_of(option, best, rate)
    gain = 0.0 if best == baseline else await search.confirm(best, baseline)
    # Other work slows what runs beside it: during the winner's runs it only makes the
    # margin harder to reach; during the baseline's it would make the gain look larger.
    disturbed = max(
        (t.others or 0.0 for t in search.trials if t.step == "confirm" and t.settings == baseline),
        default=0.0,
    )
    return Outcome(
        model=spec.name,
        baseline=baseline,
        winner=best,
        gain=gain,
        disturbed=disturbed,
        chosen=best if gain >= MARGIN and not noisy(disturbed) else baseline,
        searched=frozenset(plan.candidates),
        fingerprint=fingerprint,
        trials=tuple(search.trials),
        window=plan.workload.window,
    )


async def tune_models(
    specs: list[ModelSpec],
    explicit: Mapping[str, Set[str]],
    *,
    budget: float,
    quick: bool = False,
    report: Report = lambda m, t: None,
) -> list[Outcome]:
    """Tune each of ``specs`` in turn, sharing ``budget`` seconds among them."""
    end = time.monotonic() + budget
    outcomes: list[Outcome] = []
    for k, spec in enumerate(specs):
        share = max(0.0, (end - time.monotonic()) / (len(specs) - k))
        the_plan = plan(spec, explicit.get(spec.name, frozenset()), budget=share, quick=quick)
        deadline = time.monotonic() + share
        outcomes.append(await tune(spec, the_plan, deadline=deadline, report=report))
    return outcomes
