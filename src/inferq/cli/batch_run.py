"""The steps of ``inferq batch run``: submit a JSONL file as a batch, follow it to its
end (running it in this process when asked or needed), download its result files."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from inferq.cli.common import err, run, with_services
from inferq.config import Settings
from inferq.core.batch_format import NewBatch, describe
from inferq.core.files import blob_key
from inferq.core.models import Batch
from inferq.core.states import JobState

if TYPE_CHECKING:
    from inferq.runtime import Runtime


async def submit(
    runtime: Runtime, path: Path, *, tenant: str, model: str, max_tokens: int | None
) -> Batch:
    """Upload ``path`` as a dataset and create a Fireworks-style batch over it."""
    batch_id = "cli-" + uuid.uuid4().hex[:12]
    dataset = await runtime.files.create_dataset(
        batch_id + "-input",
        tenant=tenant,
        filename=path.name,
        meta={"displayName": path.name, "format": "CHAT"},
    )

    async def chunks() -> AsyncIterator[bytes]:
        with path.open("rb") as f:
            while data := await asyncio.to_thread(f.read, 1 << 20):
                yield data

    await runtime.files.add_dataset_file(dataset, name=_dataset_name(path), chunks=chunks())
    batch, _ = await runtime.batches.submit(
        NewBatch(
            id=batch_id,
            tenant=tenant,
            dialect="fireworks",
            model=model,
            endpoint="/v1/chat/completions",
            input_file_id=dataset.id,
            params={} if max_tokens is None else {"max_tokens": max_tokens},
            meta={
                "account": tenant,
                "displayName": path.name,
                "outputDatasetId": batch_id + "-output",
                "createdBy": "inferq batch run",
            },
        )
    )
    return batch


def _dataset_name(path: Path) -> str:
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in path.name)
    return name[:200] or "input.jsonl"


def follow(settings: Settings, batch: Batch, *, run_here: str) -> Batch:
    """Show the batch's progress until it ends; run it here when asked (or needed)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from inferq.api.dialects import DIALECTS
    from inferq.runtime import open_runtime

    async def main() -> Batch:
        async with contextlib.AsyncExitStack() as stack:
            runtime = await stack.enter_async_context(
                open_runtime(
                    settings.model_copy(update={"worker": run_here == "yes"}),
                    plugins=DIALECTS.plugins(),
                )
            )
            working_here = run_here == "yes"
            started = time.monotonic()
            columns = (
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("failed {task.fields[failed]}"),
                TextColumn("{task.fields[rate]:.1f} tok/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=err, transient=False) as progress:
                task = progress.add_task(batch.id, total=None, failed=0, rate=0.0)
                while True:
                    current = await runtime.batches.get(batch.id, tenant=batch.tenant)
                    counts = await runtime.batches.counts(current)
                    elapsed = max(time.monotonic() - started, 1e-6)
                    progress.update(
                        task,
                        description=f"{batch.id} {current.state.value}",
                        total=counts.total or None,
                        completed=counts.done,
                        failed=counts.failed + counts.cancelled,
                        rate=counts.completion_tokens / elapsed,
                    )
                    if current.state.terminal:
                        return current
                    if (
                        not working_here
                        and run_here == "auto"
                        and current.state is JobState.VALIDATING
                        and time.monotonic() - started > 3
                    ):
                        progress.console.print(
                            "no worker took the batch up within 3 s: running it in this process"
                        )
                        await stack.enter_async_context(
                            open_runtime(
                                settings.model_copy(update={"worker": True}),
                                plugins=DIALECTS.plugins(),
                            )
                        )
                        working_here = True
                    await asyncio.sleep(0.5)

    final = run(main())
    _print_batch(final)
    return final


def download(settings: Settings, batch: Batch, output: Path, errors: Path) -> None:
    """Write an ended batch's result and error files (a failed batch's errors on stderr)."""

    async def fetch(runtime: Runtime) -> tuple[int, int]:
        fmt = runtime.batches.formats[batch.dialect]
        sizes = []
        for target, path in zip(fmt.output_files(batch), (output, errors), strict=True):
            key = blob_key(batch.tenant, target.record_id, target.name)
            size = 0
            with path.open("wb") as f:
                if await runtime.blobs.size(key) is not None:
                    async for chunk in runtime.blobs.read(key):
                        await asyncio.to_thread(f.write, chunk)
                        size += len(chunk)
            sizes.append(size)
        return sizes[0], sizes[1]

    if batch.state is JobState.FAILED:
        for error in batch.errors or []:
            err.print(f"[red]{describe(error)}[/red]")
        return
    written = with_services(settings, fetch)
    err.print(f"results: {output} ({written[0]} bytes); errors: {errors} ({written[1]} bytes)")


def _print_batch(batch: Batch) -> None:
    counts = batch.counts
    done = (
        ""
        if counts is None
        else (
            f"{counts.succeeded} succeeded, {counts.failed} failed, {counts.cancelled} not run; "
            f"{counts.prompt_tokens} prompt + {counts.completion_tokens} completion tokens"
        )
    )
    err.print(f"batch {batch.id}: {batch.state.value}. {done}")
    if batch.error is not None:
        err.print(f"[red]{batch.error.message}[/red]")
