"""``inferq jobs``: list, show and cancel jobs of every tenant."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from inferq.cli.common import (
    Limit,
    database_command,
    fail,
    out,
    state_filter,
    timestamp,
    with_services,
    with_store,
)
from inferq.config import Settings
from inferq.core.models import Job, JobFilter
from inferq.core.work import ChatResult, EmbedResult

jobs_app = typer.Typer(help="List, show and cancel jobs.", no_args_is_help=True)

JobId = Annotated[str, typer.Argument(help="The job id.")]


@database_command(jobs_app, "list")
def jobs_list(
    config: Settings,
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    model: Annotated[str | None, typer.Option(help="Only jobs of this model.")] = None,
    tenant: Annotated[str | None, typer.Option(help="Only jobs of this tenant.")] = None,
    limit: Limit = 50,
) -> None:
    """List jobs, newest first."""
    states = state_filter(state)
    flt = JobFilter(tenant=tenant, model=model, states=states, limit=limit)
    jobs = with_store(config, lambda store: store.list_jobs(flt))
    table = Table()
    # ids are what the other commands take: never cut them
    table.add_column("id", no_wrap=True, min_width=36)
    for name in ("tenant", "model", "origin", "class", "prio", "state", "tries", "created"):
        table.add_column(name)
    for job in jobs:
        table.add_row(
            job.id,
            job.tenant,
            job.model,
            job.origin,
            job.service_class.name.lower(),
            str(job.priority),
            job.state.value,
            str(job.attempt),
            timestamp(job.created_at),
        )
    out.print(table)


@database_command(jobs_app, "show")
def jobs_show(config: Settings, job_id: JobId) -> None:
    """Show one job in full."""
    job = with_store(config, lambda store: store.get_job(job_id, tenant=None))
    if job is None:
        fail(f"job {job_id} not found")
    table = Table(show_header=False)
    rows: list[tuple[str, str]] = [
        ("id", job.id),
        ("tenant", job.tenant),
        ("model", job.model),
        ("origin", job.origin),
        ("class", job.service_class.name.lower()),
        ("priority", str(job.priority)),
        ("state", job.state.value),
        ("attempt", f"{job.attempt} of {job.max_attempts}"),
        ("created", timestamp(job.created_at)),
        ("claimed", timestamp(job.claimed_at)),
        ("finished", timestamp(job.finished_at)),
        ("usage", f"{job.usage.prompt_tokens} prompt + {job.usage.completion_tokens} completion"),
        ("info", json.dumps(job.info)),
        ("request", json.dumps(job.request.to_dict(), ensure_ascii=False)),
        ("result", _result_text(job)),
        ("error", f"{job.error.code}: {job.error.message}" if job.error else ""),
    ]
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


@database_command(jobs_app, "cancel")
def jobs_cancel(config: Settings, job_id: JobId) -> None:
    """Cancel a queued or running job (a running one stops within a second)."""
    job = with_services(config, lambda runtime: runtime.jobs.cancel(job_id, tenant=None))
    out.print(f"job {job_id}: {job.state.value}")


def _result_text(job: Job) -> str:
    if isinstance(job.result, ChatResult):
        return job.result.text
    if isinstance(job.result, EmbedResult):
        return f"{len(job.result.vectors)} vectors of {len(job.result.vectors[0])} dimensions"
    return ""
