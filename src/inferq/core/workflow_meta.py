"""A document workflow job's record: its nodes, its files and the state of each task.

A workflow job is a :class:`~inferq.core.models.Batch` of dialect :data:`DIALECT`
(endpoint :data:`WORKFLOW`); what is particular to it lives in the record's ``meta``,
whose shape :class:`WorkflowMeta` gives. Each (file, node) pair is one task, with a
state in ``tasks[file_id][node_id]``; node and file ids become parts of blob keys, so
they follow :data:`NODE_ID_RULE`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, cast

from inferq.core.models import Batch
from inferq.core.ports import tenant_prefix

#: the ``dialect`` of a workflow job's record (the Unstructured dialect's name)
DIALECT = "unstructured"
#: the ``endpoint`` of a workflow job's record
WORKFLOW = "workflow"

PARTITION, PROMPTER, CHUNK, EMBED = "partition", "prompter", "chunk", "embed"
NODE_TYPES = (PARTITION, PROMPTER, CHUNK, EMBED)

READY, IN_PROGRESS, SUCCESS, FAILURE, SKIPPED = (
    "ready",
    "in_progress",
    "success",
    "failure",
    "skipped",
)

#: the enrichments a prompter node can do on the chat model (a dialect's
#: :class:`Catalogue` names the subtypes that stand for each)
TABLE_DESCRIPTION, TABLE2HTML, NER = "table_description", "table2html", "ner"
ENRICHMENTS = (TABLE_DESCRIPTION, TABLE2HTML, NER)

TaskState = Literal["ready", "in_progress", "success", "failure", "skipped"]


class NodeMeta(TypedDict):
    """One node of the chain, as the record keeps it (see :class:`Node`)."""

    id: str
    name: str
    type: str
    subtype: str
    settings: dict[str, Any]


class FileMeta(TypedDict):
    """One input file of the job (its bytes are the blob at :func:`input_key`)."""

    id: str
    name: str
    filetype: str
    size: int


class WorkflowMeta(TypedDict):
    """The ``meta`` of a workflow job's record."""

    workflow_id: str
    workflow_name: str
    #: "template" or "ephemeral" (a chain given with the request)
    job_type: str
    template_id: str | None
    #: in run order
    nodes: list[NodeMeta]
    files: list[FileMeta]
    #: file id -> node id -> the task's state (one of :data:`TaskState`)
    tasks: dict[str, dict[str, str]]
    #: file id -> why the file failed
    errors: dict[str, str]
    #: Unstructured's status name (SCHEDULED, IN_PROGRESS, COMPLETED, FAILED, STOPPED)
    processing_status: str
    message: str | None


def meta_of(job: Batch) -> WorkflowMeta:
    """The workflow record's ``meta``, typed (the store keeps it as plain JSON)."""
    return cast(WorkflowMeta, job.meta)


def record_meta(meta: WorkflowMeta) -> dict[str, Any]:
    """``meta`` as the record stores it (plain JSON)."""
    return cast(dict[str, Any], meta)


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    name: str
    type: str
    subtype: str
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> NodeMeta:
        return NodeMeta(
            id=self.id,
            name=self.name,
            type=self.type,
            subtype=self.subtype,
            settings=self.settings,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Node:
        return cls(
            id=data["id"],
            name=data["name"],
            type=data["type"],
            subtype=data["subtype"],
            settings=dict(data.get("settings") or {}),
        )


#: a node id (it names the node's output blobs): a letter or digit, then up to 127
#: letters, digits, '_', '.' or '-'
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
NODE_ID_RULE = (
    "1-128 letters, digits, '_', '.' or '-', starting with a letter or digit, without '..'"
)


def shown(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message, cut short, in ASCII (NULs and surrogates escaped)."""
    return ascii(text if len(text) <= limit else text[:limit] + "...")


def is_key_part(text: object) -> bool:
    """Whether ``text`` may be one part of a blob key (a node or file id)."""
    return isinstance(text, str) and bool(_NODE_ID.fullmatch(text)) and ".." not in text


def node_id_problem(node_id: object) -> str | None:
    """Why ``node_id`` cannot be a node's id (it becomes part of blob keys), or None."""
    if not isinstance(node_id, str) or not node_id:
        return "a node id must be a non-empty string"
    if not is_key_part(node_id):
        return f"{shown(node_id)} is not a valid node id: use {NODE_ID_RULE}"
    return None


def input_key(tenant: str, job_id: str, file_id: str) -> str:
    return f"{tenant_prefix(tenant)}/workflows/{job_id}/{file_id}/input"


def output_key(tenant: str, job_id: str, file_id: str, node_id: str) -> str:
    return f"{tenant_prefix(tenant)}/workflows/{job_id}/{file_id}/{node_id}.json"


def nodes_of(job: Batch) -> list[Node]:
    return [Node.from_dict(n) for n in meta_of(job)["nodes"]]


def files_of(job: Batch) -> list[FileMeta]:
    return meta_of(job)["files"]


def node_stats(job: Batch) -> list[dict[str, Any]]:
    tasks = meta_of(job).get("tasks", {})
    stats = []
    for node in nodes_of(job):
        counts = {READY: 0, IN_PROGRESS: 0, SUCCESS: 0, FAILURE: 0}
        for per_file in tasks.values():
            state = per_file.get(node.id, READY)
            if state in counts:
                counts[state] += 1
        stats.append({"node": node, **counts})
    return stats
