"""inferq.documents never reaches the network: every format partitioned and chunked in a
fresh interpreter whose every network and process-spawn attempt is refused and logged, with
empty NLTK / Hugging Face / spaCy / cache directories.

The sandbox is a ``sitecustomize`` that installs an audit hook (``sys.addaudithook``):
it sees each DNS lookup, socket connect, urllib request and subprocess start of the
interpreter, including those made inside libraries that swallow their own errors (as
unstructured's telemetry does), writes it to a log file and raises. A control run shows
that the hook does catch unstructured's own attempts when inferq's offline route is not
taken.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SITECUSTOMIZE = """
import os
import sys

_LOG = os.environ["DOCS_NETWORK_LOG"]
_BLOCKED = (
    "socket.connect",
    "socket.getaddrinfo",
    "socket.gethostbyname",
    "socket.gethostbyaddr",
    "socket.sendto",
    "urllib.Request",
    "subprocess.Popen",
    "os.system",
    "os.exec",
    "os.posix_spawn",
)
# ctypes.util.find_library runs these to look for a shared library (python-magic asks
# for libmagic): local, and allowed
_LIBRARY_LOOKUP = ("/sbin/ldconfig", "ldconfig", "/usr/bin/gcc", "gcc", "cc", "ld")


def _hook(event, args):
    if event == "subprocess.Popen" and str(args[0]) in _LIBRARY_LOOKUP:
        return
    if event.startswith(_BLOCKED):
        with open(_LOG, "a") as log:
            log.write(f"{event} {args!r}"[:300] + "\\n")
        raise OSError(f"blocked by the offline test: {event}")


sys.addaudithook(_hook)
"""

PARTITION_EVERYTHING = """
import json

from inferq import documents
from tests import documents_samples as samples

summary = {}
for filename, data in samples.all_samples():
    documents.check_document(filename, data)
    for strategy in ("fast", "auto"):
        elements = documents.partition(filename, data, {"strategy": strategy})
        summary[f"{filename}:{strategy}"] = [e["type"] for e in elements]
    for subtype in ("chunk_by_title", "chunk_by_character", "chunk_by_page"):
        chunks = documents.chunk(elements, subtype, {"include_orig_elements": True})
        summary[f"{filename}:{subtype}"] = len(chunks)
    vectors = [[1.0, float(i)] for i in range(len(elements))]
    chunks = documents.chunk(elements, "chunk_by_similarity", {}, vectors=vectors)
    summary[f"{filename}:chunk_by_similarity"] = len(chunks)
summary["pipeline"] = documents.runtime.pipeline_name()
print(json.dumps(summary))
"""

# what unstructured does on its own: its import-time telemetry ping, and the download of
# the spaCy model its classifiers need when that is not installed
UNSTRUCTURED_ALONE = """
import unstructured  # noqa: F401  (import-time telemetry)
import unstructured.nlp.tokenize as tokenize

try:
    tokenize.pos_tag("The queue runs every job.")
except Exception as exc:
    print("pos_tag failed:", type(exc).__name__)
"""


def run_sandboxed(tmp_path: Path, code: str) -> tuple[subprocess.CompletedProcess[str], str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    empty = tmp_path / "empty"
    for sub in ("home", "nltk_data", "hf", "cache", "tmp", "spacy"):
        (empty / sub).mkdir(parents=True)
    log = tmp_path / "network.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
        "PYTHONNOUSERSITE": "1",
        "HOME": str(empty / "home"),
        "NLTK_DATA": str(empty / "nltk_data"),
        "HF_HOME": str(empty / "hf"),
        "HF_HUB_CACHE": str(empty / "hf" / "hub"),
        "XDG_CACHE_HOME": str(empty / "cache"),
        "SPACY_DATA": str(empty / "spacy"),
        "TMPDIR": str(empty / "tmp"),
        "DOCS_NETWORK_LOG": str(log),
    }
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    attempts = log.read_text() if log.exists() else ""
    return result, attempts


@pytest.mark.slow
def test_every_format_partitions_and_chunks_with_the_network_off(tmp_path: Path) -> None:
    result, attempts = run_sandboxed(tmp_path, PARTITION_EVERYTHING)
    assert result.returncode == 0, result.stderr[-3000:]
    assert attempts == "", f"network or process attempts:\n{attempts}"
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["notes.txt:fast"] == ["Title", "NarrativeText", "NarrativeText"]
    assert summary["report.pdf:auto"] == ["Title", "NarrativeText", "NarrativeText"]
    assert "Table" in summary["jobs.csv:fast"]
    assert "Table" in summary["report.docx:fast"]
    assert "NarrativeText" in summary["summary.eml:fast"]
    assert "Title" in summary["page.html:fast"]
    assert "ListItem" in summary["report.md:fast"]
    assert summary["records.json:fast"]
    assert summary["report.pdf:chunk_by_page"] == 2
    for key, value in summary.items():
        if "chunk" in key:
            assert value >= 1, key
    assert summary["pipeline"] in ("inferq-rules", "en_core_web_sm")


@pytest.mark.slow
def test_the_sandbox_catches_unstructured_reaching_out_on_its_own(tmp_path: Path) -> None:
    """The control: without inferq's route, unstructured pings its telemetry endpoint and
    downloads its spaCy model; the sandbox sees both (so the test above can fail)."""
    result, attempts = run_sandboxed(tmp_path, UNSTRUCTURED_ALONE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "packages.unstructured.io" in attempts
    from inferq.documents import nlp

    if not nlp.model_installed():
        assert "github.com" in attempts
        assert "pos_tag failed" in result.stdout
