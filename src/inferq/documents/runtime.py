"""Preparing the unstructured library for use inside inferq, once per process.

unstructured is imported lazily (inside the functions that need it), and always through
:func:`prepare` first, which makes sure that nothing it does reaches the network:

- its load-time and per-partition telemetry pings and its usage notice are switched off
  through the opt-outs it reads from the environment (``SCARF_NO_ANALYTICS``,
  ``UNSTRUCTURED_DISABLE_NOTICE``), set before its first import;
- Hugging Face Hub is put offline (``HF_HUB_OFFLINE``, unless the operator set it), so a
  hi_res layout model is only ever read from the local cache;
- the spaCy model loader of its text classifiers, which downloads and installs
  ``en_core_web_sm`` when that is missing, is replaced by
  :func:`inferq.documents.nlp.load_pipeline`, which never downloads.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any

from inferq.documents import nlp

_lock = threading.Lock()
_prepared = False


class DownloadRefused(RuntimeError):
    """unstructured tried to download something at run time."""


def _refuse_download(*_args: object, **_kwargs: object) -> None:
    raise DownloadRefused(
        "inferq does not download models at run time; install en_core_web_sm ahead of time "
        "if you want it (inferq otherwise uses its own offline pipeline)"
    )


@functools.cache
def _pipeline() -> Any:
    return nlp.load_pipeline()


def prepare() -> None:
    """Configure unstructured for offline use (idempotent, thread-safe)."""
    global _prepared
    if _prepared:
        return
    with _lock:
        if _prepared:
            return
        os.environ["SCARF_NO_ANALYTICS"] = "true"
        os.environ["UNSTRUCTURED_DISABLE_NOTICE"] = "1"
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import unstructured.nlp.tokenize as tokenize

        # unstructured looks both names up at call time: _run_pipeline calls _get_nlp(),
        # _get_nlp calls _load_spacy_model(), which would call _install_spacy_model()
        tokenize._get_nlp = _pipeline
        tokenize._load_spacy_model = _pipeline
        tokenize._install_spacy_model = _refuse_download
        _prepared = True


def pipeline_name() -> str:
    """Which language pipeline the classifiers use: the spaCy model's name or inferq's."""
    return nlp.MODEL_NAME if nlp.model_installed() else "inferq-rules"
