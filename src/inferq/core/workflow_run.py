"""Running one workflow job: every file through every node, one durable task each.

:class:`WorkflowExecutor` is what the runner (:mod:`inferq.runner.workflows`)
calls while it holds the job's lease. Tasks run in node order per file; a task's
output (the element JSON) is committed to the blob store before the job's record
marks the task ``success``, so after a crash the next runner keeps every
finished output and redoes only unfinished tasks. Partitioning and chunking run
in a thread; embeddings and enrichments go through the queue as jobs of their
own, so they run on the engines in scheduling order like any other work.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from inferq.core.models import Batch, JobError
from inferq.core.ports import BatchStore, BlobStore
from inferq.core.service import JobService
from inferq.core.states import JobState, ServiceClass
from inferq.core.work import (
    ChatMessage,
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    Request,
    Result,
)
from inferq.core.workflow_meta import (
    CHUNK,
    DIALECT,
    EMBED,
    FAILURE,
    IN_PROGRESS,
    PARTITION,
    READY,
    SKIPPED,
    SUCCESS,
    FileMeta,
    Node,
    files_of,
    input_key,
    is_key_part,
    node_id_problem,
    nodes_of,
    output_key,
    shown,
)
from inferq.core.workflows import Catalogue, Documents

log = logging.getLogger("inferq.workflows")

Elements = list[dict[str, Any]]

#: texts per embedding job
EMBED_GROUP = 16
#: the longest a node waits for one of its jobs on the engines
SUBJOB_TIMEOUT = 3600.0
#: below this share of succeeded files a job fails
SUCCESS_SHARE = 0.9
#: the origin of a node's jobs on the engines: the workflow records' dialect
ORIGIN = DIALECT


class NodeFailed(Exception):
    """A file could not go through a node: it goes to the job's failed files."""


class JobLost(Exception):
    """The job changed under the runner (cancelled, or taken over): stop writing."""


@dataclass(kw_only=True, eq=False)
class WorkflowExecutor:
    store: BatchStore
    blobs: BlobStore
    jobs: JobService
    documents: Documents
    #: which enrichment each prompter subtype does
    catalogue: Catalogue
    clock: Callable[[], float] = time.time

    # -- the job ------------------------------------------------------------------------

    async def start(self, job: Batch) -> Batch | None:
        """SCHEDULED -> IN_PROGRESS; None when someone else changed it first."""
        now = self.clock()
        meta = {**job.meta, "processing_status": "IN_PROGRESS"}
        new = job.evolve(state=JobState.RUNNING, started_at=now, updated_at=now, meta=meta)
        stored = await self._replace(new, expect=JobState.QUEUED)
        if stored is not None:
            log.info("workflow job %s started", job.id)
        return stored

    async def run(self, job: Batch) -> Batch:
        """Run every unfinished task of a running job, then end it; return it ended.

        Raises :class:`JobLost` when the record changed under it (a cancel: the
        runner then calls :meth:`stop`).
        """
        problem = unrunnable(job)
        if problem is not None:
            failed = await self.fail(job, problem, expect=JobState.RUNNING)
            if failed is None:
                raise JobLost(job.id)
            return failed
        meta = copy.deepcopy(job.meta)
        _ready_again(meta["tasks"])  # a runner died in them: do them again
        progress = _Progress(self, job, meta)
        nodes = nodes_of(job)
        for entry in files_of(job):
            await self._run_file(progress, entry, nodes)
        return await self._finish(progress)

    async def fail(self, job: Batch, message: str, *, expect: JobState) -> Batch | None:
        """End a job that cannot run as FAILED with ``message``; None when it was no longer
        in ``expect``. Only the state and the message are written over ``job``'s record."""
        meta = copy.deepcopy(job.meta)
        _ready_again(meta.get("tasks") or {})
        meta["processing_status"] = "FAILED"
        meta["message"] = message
        now = self.clock()
        new = job.evolve(
            state=JobState.FAILED,
            error=JobError("internal_error", message),
            finished_at=now,
            updated_at=now,
            meta=meta,
        )
        stored = await self._replace(new, expect=expect)
        if stored is not None:
            log.warning("workflow job %s failed: %s", job.id, message)
        return stored

    async def stop(self, job: Batch) -> Batch | None:
        """End a cancelling job as STOPPED, keeping what finished."""
        meta = copy.deepcopy(job.meta)
        _ready_again(meta["tasks"])
        meta["processing_status"] = "STOPPED"
        meta["message"] = "the job was cancelled"
        now = self.clock()
        new = job.evolve(state=JobState.CANCELLED, finished_at=now, updated_at=now, meta=meta)
        stored = await self._replace(new, expect=JobState.CANCELLING)
        if stored is not None:
            log.info("workflow job %s stopped", job.id)
        return stored

    async def _replace(self, new: Batch, *, expect: JobState) -> Batch | None:
        """Write ``new`` over the job's record while that is in ``expect``; None when it
        was not (someone else changed it first)."""
        return new if await self.store.update_batch(new, expect=expect) else None

    async def _finish(self, state: _Progress) -> Batch:
        files = files_of(state.job)
        failed = len(state.meta["errors"])
        ok = len(files) - failed
        if failed == 0:
            status, final, message = "SUCCESS", JobState.SUCCEEDED, None
        elif ok >= SUCCESS_SHARE * len(files):
            status, final = "COMPLETED_WITH_ERRORS", JobState.SUCCEEDED
            message = f"{failed} of {len(files)} files failed; see failed-files"
        else:
            status, final = "FAILED", JobState.FAILED
            message = (
                f"{failed} of {len(files)} files failed, more than "
                f"{100 - int(SUCCESS_SHARE * 100)}%; see failed-files"
            )
        state.meta["processing_status"] = status
        state.meta["message"] = message
        now = self.clock()
        new = state.job.evolve(
            state=final, finished_at=now, updated_at=now, meta=copy.deepcopy(state.meta)
        )
        if not await self.store.update_batch(new, expect=JobState.RUNNING):
            raise JobLost(state.job.id)
        log.info("workflow job %s ended %s (%d/%d files)", new.id, status, ok, len(files))
        return new

    # -- one file -----------------------------------------------------------------------

    async def _run_file(self, state: _Progress, entry: FileMeta, nodes: list[Node]) -> None:
        job, file_id = state.job, entry["id"]
        tasks = state.meta["tasks"][file_id]
        elements: Elements | None = None
        for i, node in enumerate(nodes):
            task = tasks[node.id]
            if task == SUCCESS:
                elements = None  # read back only if a later node needs it
                continue
            if task in (FAILURE, SKIPPED):
                return
            if elements is None and i > 0:
                elements = await self._read_output(job, file_id, nodes[i - 1])
            tasks[node.id] = IN_PROGRESS
            await state.save()
            try:
                elements = await self._run_node(job, entry, node, elements)
            except NodeFailed as exc:
                log.info("workflow job %s: %s failed at %s: %s", job.id, entry["name"],
                         node.name, exc)  # fmt: skip
                tasks[node.id] = FAILURE
                for later in nodes[i + 1 :]:
                    tasks[later.id] = SKIPPED
                state.meta["errors"][file_id] = f"{node.name} ({node.type}): {exc}"
                await state.save()
                return
            await self.blobs.put(
                output_key(job.tenant, job.id, file_id, node.id), _json_chunks(elements)
            )
            tasks[node.id] = SUCCESS
            await state.save()

    async def _read_output(self, job: Batch, file_id: str, node: Node) -> Elements:
        data = bytearray()
        async for chunk in self.blobs.read(output_key(job.tenant, job.id, file_id, node.id)):
            data += chunk
        elements: Elements = json.loads(data)
        return elements

    async def _run_node(
        self, job: Batch, entry: FileMeta, node: Node, elements: Elements | None
    ) -> Elements:
        if node.type == PARTITION:
            data = bytearray()
            async for chunk in self.blobs.read(input_key(job.tenant, job.id, entry["id"])):
                data += chunk
            return await self._documents(
                self.documents.partition, entry["name"], bytes(data), node.settings
            )
        assert elements is not None
        if node.type == CHUNK:
            vectors = None
            if node.subtype == "chunk_by_similarity":
                vectors = await self._embed(job, node.settings["model_name"], elements)
            settings = {k: v for k, v in node.settings.items() if k != "model_name"}
            return await self._documents(
                self.documents.chunk, elements, node.subtype, settings, vectors
            )
        if node.type == EMBED:
            vectors = await self._embed(job, node.settings["model_name"], elements)
            return [{**e, "embeddings": list(v)} for e, v in zip(elements, vectors, strict=True)]
        return await self._enrich(job, node, elements)

    async def _documents(self, fn: Callable[..., Elements], *args: Any) -> Elements:
        try:
            return await asyncio.to_thread(fn, *args)
        except self.documents.DocumentError as exc:
            raise NodeFailed(str(exc)) from None

    # -- work on the engines ---------------------------------------------------------------

    async def _embed(self, job: Batch, model: str, elements: Elements) -> list[list[float]]:
        texts = [str(e.get("text") or "") or " " for e in elements]
        vectors: list[list[float]] = []
        for start in range(0, len(texts), EMBED_GROUP):
            group = tuple(texts[start : start + EMBED_GROUP])
            result = await self._on_engine(job, model, EmbedRequest(group))
            assert isinstance(result, EmbedResult)
            vectors += [list(v) for v in result.vectors]
        return vectors

    async def _chat(self, job: Batch, model: str, prompt: str, max_tokens: int) -> str:
        request = ChatRequest(
            messages=(ChatMessage("user", prompt),), max_tokens=max_tokens, temperature=0.0
        )
        result = await self._on_engine(job, model, request)
        assert isinstance(result, ChatResult)
        return result.text.strip()

    async def _on_engine(self, job: Batch, model: str, request: Request) -> Result:
        sub = await self.jobs.submit(
            tenant=job.tenant,
            model=model,
            request=request,
            origin=ORIGIN,
            service_class=ServiceClass.ASYNC,
            info={"workflow_job": job.id},
        )
        try:
            done = await self.jobs.wait(
                sub.id, tenant=job.tenant, deadline=self.clock() + SUBJOB_TIMEOUT
            )
        except BaseException:
            # cancelled (the job was stopped) or timed out: do not leave it queued
            await asyncio.shield(self._cancel(sub.id, job.tenant))
            raise
        if done.state is not JobState.SUCCEEDED or done.result is None:
            reason = done.error.message if done.error else done.state.value
            raise NodeFailed(f"{model}: {reason}")
        return done.result

    async def _cancel(self, job_id: str, tenant: str) -> None:
        try:
            await self.jobs.cancel(job_id, tenant=tenant)
        except Exception:  # already ended
            log.debug("sub-job %s had already ended", job_id)

    async def _enrich(self, job: Batch, node: Node, elements: Elements) -> Elements:
        task = self.catalogue.text_enrichments[node.subtype]
        model = node.settings["model"]
        out = []
        for element in elements:
            element = copy.deepcopy(element)
            metadata: dict[str, Any] = element.setdefault("metadata", {})
            text = str(element.get("text") or "")
            if task in ("table_description", "table2html") and element.get("type") == "Table":
                table = str(metadata.get("text_as_html") or text)
                if task == "table_description":
                    metadata["table_description"] = await self._chat(
                        job, model, f"Describe this table in one or two sentences:\n{table}", 96
                    )
                else:
                    html = await self._chat(
                        job, model, f"Write this table as one HTML <table>:\n{table}", 256
                    )
                    found = re.search(r"<table.*?</table>", html, re.S | re.I)
                    metadata["text_as_html"] = found.group(0) if found else table
            elif task == "ner" and text.strip():
                answer = await self._chat(
                    job,
                    model,
                    "List the named entities (people, organizations, places, products, dates) "
                    'in this text as JSON: [{"entity": "...", "type": "..."}].\n\n' + text[:2000],
                    128,
                )
                metadata["entities"] = {"items": _entities(answer), "relationships": []}
            out.append(element)
        return out


def _ready_again(tasks: dict[str, dict[str, str]]) -> None:
    """Make the tasks left in progress (by a runner that died or stopped) ready again."""
    for per_file in tasks.values():
        for node_id, task in per_file.items():
            if task == IN_PROGRESS:
                per_file[node_id] = READY


def unrunnable(job: Batch) -> str | None:
    """Why a stored job can never run, naming the node or file; None when it can.

    Node and file ids become part of blob keys. The service checks them when a job
    is created; a record that reached the store some other way is checked here, so
    it fails at once instead of at every try.
    """
    try:
        nodes = nodes_of(job)
        files = files_of(job)
        tasks = job.meta["tasks"]
    except (KeyError, TypeError, ValueError) as exc:
        return f"the job's record is malformed ({type(exc).__name__}: {shown(str(exc))})"
    for index, node in enumerate(nodes):
        problem = node_id_problem(node.id)
        if problem is not None:
            return f"node {index} ({shown(str(node.name))}): {problem}"
    for index, entry in enumerate(files):
        file_id = entry.get("id") if isinstance(entry, dict) else None
        if not is_key_part(file_id):
            return f"input file {index}: {shown(str(file_id))} is not a valid file id"
        per_file = tasks.get(file_id) if isinstance(tasks, dict) else None
        if not isinstance(per_file, dict) or any(n.id not in per_file for n in nodes):
            return f"input file {index}: the job's record has no task state for every node"
    return None


class _Progress:
    """A running job's task states, written back after each change."""

    def __init__(self, executor: WorkflowExecutor, job: Batch, meta: dict[str, Any]) -> None:
        self.executor = executor
        self.job = job
        self.meta = meta

    async def save(self) -> None:
        now = self.executor.clock()
        new = self.job.evolve(meta=copy.deepcopy(self.meta), updated_at=now)
        if not await self.executor.store.update_batch(new, expect=JobState.RUNNING):
            raise JobLost(self.job.id)
        self.job = new


def _entities(answer: str) -> list[dict[str, str]]:
    """The entities a model listed, as far as its answer is JSON of the asked shape."""
    found = re.search(r"\[.*\]", answer, re.S)
    if not found:
        return []
    try:
        items = json.loads(found.group(0))
    except ValueError:
        return []
    if not isinstance(items, list):
        return []
    return [
        {"entity": str(i["entity"]), "type": str(i.get("type", ""))}
        for i in items
        if isinstance(i, dict) and isinstance(i.get("entity"), str)
    ]


async def _json_chunks(elements: Elements) -> AsyncIterator[bytes]:
    """The element list as JSON, one element at a time."""
    yield b"["
    for i, element in enumerate(elements):
        if i:
            yield b","
        yield json.dumps(element, ensure_ascii=False, default=_plain).encode()
    yield b"]"


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)
