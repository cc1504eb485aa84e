"""An API process (``inferq serve --workers N``, ``--no-worker``) checks requests against
the llama.cpp models but never decodes: it must not import llama-cpp-python or numpy,
which the decode thread needs (numpy alone is 11.5 MB of each such process)."""

from __future__ import annotations

import subprocess
import sys


def test_checking_requests_imports_neither_llama_cpp_nor_numpy() -> None:
    # a process of its own: this one may have imported anything already
    code = """
import sys
import inferq.api.app
from inferq.core.structured import OutputFormat
from inferq.core.work import ChatMessage, ChatRequest
from inferq.engines.registry import DEFAULT_MODEL, ModelRegistry, load_specs

registry = ModelRegistry(load_specs(None))
schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
request = ChatRequest(
    messages=(ChatMessage(role="user", content="hi"),),
    max_tokens=8,
    logprobs=True,
    top_logprobs=2,
    response_format=OutputFormat(kind="json_schema", schema=schema, name="a"),
)
registry.validate(DEFAULT_MODEL, request)
loaded = sorted(m for m in ("numpy", "llama_cpp") if m in sys.modules)
assert not loaded, loaded
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
