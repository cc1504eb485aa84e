"""Document workflows: uploaded files pushed through a chain of nodes.

A workflow job is a :class:`~inferq.core.models.Batch` record of dialect
``unstructured`` (endpoint :data:`WORKFLOW`): the same table, lease and
compare-and-set transitions as batches, with the workflow in its ``meta``, typed as
:class:`~inferq.core.workflow_meta.WorkflowMeta`.

Each (file, node) pair is one durable task: its output is written to the blob
store atomically before its state says ``success``, so a job taken over after a
crash keeps every finished node's output and redoes only the rest
(:mod:`inferq.core.workflow_run`).

States: ``queued`` (SCHEDULED) -> ``running`` (IN_PROGRESS) -> ``succeeded``
(COMPLETED) / ``failed`` / ``cancelled`` (STOPPED); a cancel of a running job
goes through ``cancelling`` while its runner stops.

Core knows the four kinds of node (partition, prompter, chunk, embed), their order
and what each runs. Which subtype names a client may use, and which templates
exist, is the dialect's: a :class:`Catalogue` (Unstructured's is in
:mod:`inferq.api.unstructured.catalogue`) given to the service and the executor.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from inferq.core.batch_format import NewBatch
from inferq.core.errors import ClientError, Conflict, InvalidRequest, NotFound
from inferq.core.inputs import check_text
from inferq.core.limits import LAUNCH_SPACING, RateStore, space_launches
from inferq.core.models import Batch
from inferq.core.ports import BatchFilter, BatchStore, BlobStore
from inferq.core.states import TERMINAL_STATES, JobState
from inferq.core.work import ChatMessage, ChatRequest, EmbedRequest, Request
from inferq.core.workflow_meta import (
    CHUNK,
    DIALECT,
    EMBED,
    NODE_TYPES,
    PARTITION,
    PROMPTER,
    READY,
    SUCCESS,
    WORKFLOW,
    FileMeta,
    Node,
    WorkflowMeta,
    files_of,
    input_key,
    meta_of,
    node_id_problem,
    nodes_of,
    output_key,
    record_meta,
)

log = logging.getLogger("inferq.workflows")


class Documents(Protocol):
    """The document-processing layer (:mod:`inferq.documents` is the real one)."""

    @property
    def DocumentError(self) -> type[Exception]:
        """What every function below raises on a bad document or setting."""

    def check_document(self, filename: str, data: bytes) -> str: ...

    def check_partition_settings(
        self, subtype: str, settings: Mapping[str, object]
    ) -> dict[str, object]: ...

    def check_chunk_settings(
        self, subtype: str, settings: Mapping[str, object]
    ) -> dict[str, object]: ...

    def partition(
        self, filename: str, data: bytes, settings: Mapping[str, object]
    ) -> list[dict[str, object]]: ...

    def chunk(
        self,
        elements: list[dict[str, object]],
        subtype: str,
        settings: Mapping[str, object],
        vectors: Sequence[Sequence[float]] | None = None,
    ) -> list[dict[str, object]]: ...


class ModelNames(Protocol):
    def validate(self, model: str, request: Request) -> None: ...

    def names(self) -> Collection[str]: ...

    def context_length(self, model: str) -> int: ...


@dataclass(frozen=True, kw_only=True)
class Catalogue:
    """The node subtypes a dialect's workflows may use, and its templates.

    Core knows the four kinds of node and what each runs; the names a client uses for
    them are the dialect's (:data:`inferq.api.unstructured.catalogue.CATALOGUE`), handed
    to the service and the executor by the runtime. The empty catalogue runs nothing.
    """

    #: partition subtypes; each is handed to the documents layer under its own name
    partition: frozenset[str] = frozenset()
    #: partition subtypes refused because they need a vision model (none is configured)
    vision_partition: frozenset[str] = frozenset()
    #: chunk subtypes; each is handed to the documents layer under its own name
    chunk: frozenset[str] = frozenset()
    #: embed subtypes; all run on the configured embedding model
    embed: frozenset[str] = frozenset()
    #: prompter subtypes that run on a chat model, and the enrichment (ENRICHMENTS) each does
    text_enrichments: Mapping[str, str] = field(default_factory=dict)
    #: prompter subtypes refused because they need a model that reads images
    vision_enrichments: frozenset[str] = frozenset()
    #: each template's node chain, by template id
    templates: Mapping[str, Sequence[Node]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InputFile:
    """A file as it arrived with a create request."""

    name: str
    data: bytes
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class WorkflowLimits:
    max_files: int = 10
    max_file_bytes: int = 10 * 1024 * 1024
    #: jobs of one tenant that run at once; the rest stay scheduled
    max_running: int = 5
    #: the chat model enrichments use when their settings name none
    chat_model: str | None = None
    #: the embedding model embed nodes use when their settings name none
    embed_model: str | None = None
    #: a tenant's jobs launched less than this many seconds apart get 429 (0: any)
    launch_spacing: float = LAUNCH_SPACING


def _bad(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


@dataclass(kw_only=True, eq=False)
class WorkflowService:
    """What the Unstructured dialect calls: create, read, cancel, download."""

    store: BatchStore
    blobs: BlobStore
    models: ModelNames
    documents: Documents
    catalogue: Catalogue
    limits: WorkflowLimits = field(default_factory=WorkflowLimits)
    clock: Callable[[], float] = time.time
    #: where launches are spaced (:func:`inferq.core.limits.space_launches`); None: not
    launches: RateStore | None = None

    # -- checking a request ---------------------------------------------------------

    def resolve_nodes(
        self, *, template_id: str | None, job_nodes: list[dict[str, Any]] | None
    ) -> tuple[list[Node], str | None]:
        """The checked, normalised node chain of a create request, and its template."""
        if (template_id is None) == (job_nodes is None):
            raise _bad(
                "request_data must hold either template_id or job_nodes, not both",
                "request_data",
            )
        if template_id is not None:
            template = self.catalogue.templates.get(template_id)
            if template is None:
                raise _bad(
                    f"template {template_id!r} does not exist; templates: "
                    + ", ".join(sorted(self.catalogue.templates)),
                    "request_data.template_id",
                )
            nodes = list(template)
        else:
            assert job_nodes is not None
            nodes = [self._parse_node(i, raw) for i, raw in enumerate(job_nodes)]
        self._check_order(nodes)
        return [self._check_node(i, node, nodes) for i, node in enumerate(nodes)], template_id

    @staticmethod
    def _parse_node(index: int, raw: Any) -> Node:
        where = f"request_data.job_nodes.{index}"
        if not isinstance(raw, dict):
            raise _bad(f"{where}: a node must be an object", where)
        for key in ("name", "type", "subtype"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise _bad(f"{where}.{key}: required, a non-empty string", f"{where}.{key}")
        settings = raw.get("settings")
        if settings is not None and not isinstance(settings, dict):
            raise _bad(f"{where}.settings: must be an object", f"{where}.settings")
        node_id = raw.get("id")
        if node_id is not None and (problem := node_id_problem(node_id)) is not None:
            raise _bad(f"{where}.id: {problem}", f"{where}.id")
        return Node(
            id=node_id or str(uuid.uuid4()),
            name=raw["name"],
            type=raw["type"],
            subtype=raw["subtype"],
            settings=dict(settings or {}),
        )

    @staticmethod
    def _check_order(nodes: list[Node]) -> None:
        where = "request_data.job_nodes"
        if not nodes:
            raise _bad("a workflow needs at least one node", where)
        for i, node in enumerate(nodes):
            if node.type not in NODE_TYPES:
                raise _bad(
                    f"{where}.{i}.type: unknown node type {node.type!r}; "
                    f"types: {', '.join(NODE_TYPES)}",
                    f"{where}.{i}.type",
                )
        ids = [n.id for n in nodes]
        if len(set(ids)) != len(ids):
            raise _bad("node ids must be unique", where)
        types = [n.type for n in nodes]
        if types[0] != PARTITION:
            raise _bad("the first node must be a partition node", f"{where}.0.type")
        # partition -> prompter* -> (chunk -> embed?)?
        rank = {PARTITION: 0, PROMPTER: 1, CHUNK: 2, EMBED: 3}
        for i in range(1, len(types)):
            before, now = types[i - 1], types[i]
            if now == PARTITION:
                raise _bad("a workflow has exactly one partition node, first", f"{where}.{i}")
            if rank[now] < rank[before] or (now == before and now in (CHUNK, EMBED)):
                raise _bad(
                    f"a {now} node cannot follow a {before} node: the order is partition, "
                    "then enrichments (prompter), then chunk, then embed",
                    f"{where}.{i}",
                )
            if now == EMBED and before != CHUNK:
                raise _bad("an embed node must come right after a chunk node", f"{where}.{i}")

    def _check_node(self, index: int, node: Node, nodes: list[Node]) -> Node:
        where = f"request_data.job_nodes.{index}"
        settings: dict[str, Any] = dict(node.settings)
        catalogue = self.catalogue
        if node.type == PARTITION:
            if node.subtype not in catalogue.partition:
                raise self._subtype(where, node, catalogue.partition)
            if node.subtype in catalogue.vision_partition:
                usable = " or ".join(sorted(catalogue.partition - catalogue.vision_partition))
                raise _bad(
                    f"{where}: {node.subtype} partitioning needs a vision model, and none is "
                    f"configured; use the {usable} subtype",
                    f"{where}.subtype",
                )
            settings = self._documents(
                where, lambda: self.documents.check_partition_settings(node.subtype, settings)
            )
        elif node.type == CHUNK:
            if node.subtype not in catalogue.chunk:
                raise self._subtype(where, node, catalogue.chunk)
            # chunk_by_similarity's embedding model is inferq's business, not the chunker's
            model = (
                settings.pop("model_name", None) if node.subtype == "chunk_by_similarity" else None
            )
            settings = self._documents(
                where, lambda: self.documents.check_chunk_settings(node.subtype, settings)
            )
            if node.subtype == "chunk_by_similarity":
                settings["model_name"] = self._embed_model(where, model)
        elif node.type == EMBED:
            if node.subtype not in catalogue.embed:
                raise self._subtype(where, node, catalogue.embed)
            model = self._embed_model(where, settings.get("model_name"))
            settings = {"model_name": model}
            chunker = nodes[index - 1]
            limit = self.models.context_length(model) * 3
            max_chars = chunker.settings.get("max_characters", 500)
            if isinstance(max_chars, int) and max_chars > limit:
                raise _bad(
                    f"{where}: the chunk node's max_characters ({max_chars}) is over what "
                    f"{model} can embed (about {limit} characters)",
                    f"request_data.job_nodes.{index - 1}.settings.max_characters",
                )
        else:  # prompter
            text = catalogue.text_enrichments
            if node.subtype in catalogue.vision_enrichments:
                raise _bad(
                    f"{where}: {node.subtype} needs a model that reads images, and none is "
                    "configured; text enrichments: " + ", ".join(sorted(text)),
                    f"{where}.subtype",
                )
            if node.subtype not in text:
                raise self._subtype(where, node, text.keys() | catalogue.vision_enrichments)
            unknown = set(settings) - {"model", "provider_type", "prompt"}
            if unknown:
                raise _bad(
                    f"{where}.settings: unknown setting(s) {', '.join(sorted(unknown))}",
                    f"{where}.settings",
                )
            settings["model"] = self._chat_model(where, settings.get("model"))
        return Node(id=node.id, name=node.name, type=node.type, subtype=node.subtype,
                    settings=settings)  # fmt: skip

    @staticmethod
    def _subtype(where: str, node: Node, allowed: Collection[str]) -> InvalidRequest:
        return _bad(
            f"{where}.subtype: unknown {node.type} subtype {node.subtype!r}; subtypes: "
            + ", ".join(sorted(allowed)),
            f"{where}.subtype",
        )

    def _documents(self, where: str, check: Callable[[], dict[str, object]]) -> dict[str, Any]:
        try:
            return dict(check())
        except self.documents.DocumentError as exc:
            raise _bad(f"{where}.settings: {exc}", f"{where}.settings") from None

    def _suitable(self, request: Request) -> list[str]:
        """The configured models that can run ``request``, by name."""
        suitable = []
        for name in sorted(self.models.names()):
            try:
                self.models.validate(name, request)
            except ClientError:
                continue
            suitable.append(name)
        return suitable

    def _model(self, where: str, model: Any, request: Request, default: str | None) -> str:
        suitable = self._suitable(request)
        if model is None:
            model = default if default is not None else next(iter(suitable), None)
            if model is None:
                raise _bad(f"{where}: no suitable model is configured", f"{where}.settings")
        if not isinstance(model, str):
            raise _bad(f"{where}.settings: the model must be a string", f"{where}.settings")
        if model not in suitable:
            raise _bad(
                f"{where}.settings: model {model!r} is not configured for this node; "
                f"configured: {', '.join(suitable) or 'none'}",
                f"{where}.settings",
            )
        return model

    def _embed_model(self, where: str, model: Any) -> str:
        return self._model(where, model, EmbedRequest(("x",)), self.limits.embed_model)

    def _chat_model(self, where: str, model: Any) -> str:
        request = ChatRequest(messages=(ChatMessage("user", "x"),), max_tokens=1)
        return self._model(where, model, request, self.limits.chat_model)

    def check_files(self, files: Sequence[InputFile]) -> list[str]:
        """The file type of each file; InvalidRequest naming the first bad one."""
        if not files:
            raise _bad("input_files: at least one file is required", "input_files")
        if len(files) > self.limits.max_files:
            raise _bad(
                f"input_files: {len(files)} files; a job takes at most {self.limits.max_files}",
                "input_files",
            )
        types = []
        for i, f in enumerate(files):
            # the name is kept in the job's record: text every store can keep
            check_text(f.name, param=f"input_files.{i}", what="the file name")
            if len(f.data) > self.limits.max_file_bytes:
                raise _bad(
                    f"input file {f.name!r} is larger than the limit of "
                    f"{self.limits.max_file_bytes} bytes",
                    f"input_files.{i}",
                )
            try:
                types.append(self.documents.check_document(f.name, f.data))
            except self.documents.DocumentError as exc:
                raise _bad(f"input file {f.name!r}: {exc}", f"input_files.{i}") from None
        return types

    # -- what the dialect calls -----------------------------------------------------

    async def create(
        self,
        *,
        tenant: str,
        template_id: str | None,
        job_nodes: list[dict[str, Any]] | None,
        files: Sequence[InputFile],
    ) -> Batch:
        """Check everything, store the inputs, then the job (SCHEDULED)."""
        nodes, template = self.resolve_nodes(template_id=template_id, job_nodes=job_nodes)
        filetypes = self.check_files(files)
        now = self.clock()
        if self.launches is not None and self.limits.launch_spacing > 0:
            await space_launches(self.launches, tenant, now=now, spacing=self.limits.launch_spacing)
        job_id = str(uuid.uuid4())
        entries: list[FileMeta] = []
        for f, filetype in zip(files, filetypes, strict=True):
            file_id = str(uuid.uuid4())
            await self.blobs.put(input_key(tenant, job_id, file_id), _once(f.data))
            entries.append(FileMeta(id=file_id, name=f.name, filetype=filetype, size=len(f.data)))
        meta = WorkflowMeta(
            workflow_id=str(uuid.uuid4()),
            workflow_name=f"job-{job_id[:8]}",
            job_type="template" if template else "ephemeral",
            template_id=template,
            nodes=[n.to_dict() for n in nodes],
            files=entries,
            tasks={e["id"]: {n.id: READY for n in nodes} for e in entries},
            errors={},
            processing_status="SCHEDULED",
            message=None,
        )
        new = NewBatch(
            id=job_id,
            tenant=tenant,
            dialect=DIALECT,
            endpoint=WORKFLOW,
            input_file_id=entries[0]["id"],
            meta=record_meta(meta),
        )
        # workflow jobs do not expire (they run until done or cancelled); the record
        # needs a finite time (it is stored as JSON)
        expires_at = now + 100 * 365 * 86400
        job = new.record(JobState.QUEUED, now=now, expires_at=expires_at).evolve(total=len(entries))
        stored, _ = await self.store.insert_batch(job)
        log.info("workflow job %s created (tenant=%s, %d files, %d nodes)", job_id, tenant,
                 len(entries), len(nodes))  # fmt: skip
        return stored

    async def get(self, job_id: str, *, tenant: str) -> Batch:
        job = await self.store.get_batch(job_id, tenant=tenant)
        if job is None or job.dialect != DIALECT:
            raise NotFound("Job not found", param="job_id")
        return job

    async def list(
        self, *, tenant: str, states: frozenset[JobState] | None, workflow_id: str | None
    ) -> list[Batch]:
        jobs: list[Batch] = []
        after: str | None = None
        while True:
            page = await self.store.list_batches(
                BatchFilter(tenant=tenant, dialect=DIALECT, limit=200, after=after, states=states)
            )
            jobs += [
                j for j in page if workflow_id is None or meta_of(j)["workflow_id"] == workflow_id
            ]
            if len(page) < 200:
                return jobs
            after = page[-1].id

    async def cancel(self, job_id: str, *, tenant: str) -> Batch:
        """Stop a job: a scheduled one at once, a running one once its runner sees it."""
        for _ in range(5):
            job = await self.get(job_id, tenant=tenant)
            if job.state in TERMINAL_STATES or job.state is JobState.CANCELLING:
                raise Conflict(f"job {job_id} has already ended", param="job_id")
            now = self.clock()
            if job.state is JobState.QUEUED:
                meta = {**job.meta, "processing_status": "STOPPED", "message": "cancelled"}
                new = job.evolve(state=JobState.CANCELLED, finished_at=now, meta=meta)
            else:
                new = job.evolve(state=JobState.CANCELLING, cancelling_at=now)
            if await self.store.update_batch(new.evolve(updated_at=now), expect=job.state):
                log.info("workflow job %s %s", job_id, new.state.value)
                return new
        raise Conflict(f"job {job_id} changed while cancelling; try again", param="job_id")

    def output(self, job: Batch, *, file_id: str, node_id: str | None) -> AsyncIterator[bytes]:
        """The element JSON one node made from one file (the last node when None)."""
        if not any(f["id"] == file_id for f in files_of(job)):
            raise NotFound(f"file {file_id} is not part of job {job.id}", param="file_id")
        nodes = nodes_of(job)
        node = nodes[-1] if node_id is None else next((n for n in nodes if n.id == node_id), None)
        if node is None:
            raise NotFound(f"node {node_id} is not part of job {job.id}", param="node_id")
        if meta_of(job)["tasks"][file_id].get(node.id) != SUCCESS:
            raise NotFound(
                f"no output yet for file {file_id} at node {node.id} (job {job.id} is "
                f"{job.state.value})",
                param="file_id",
            )
        return self.blobs.read(output_key(job.tenant, job.id, file_id, node.id))


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
