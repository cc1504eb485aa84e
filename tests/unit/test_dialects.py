"""The dialect list: which dialect a path belongs to, which paths take uploads, what the
runtime is handed, and the HTTP status of each error. The choices are the ones the app
made before dialects were plugins and before the error tree lost its statuses."""

from __future__ import annotations

import pytest
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from inferq.api.dialect import PATHS_REMEMBERED, Dialect, Dialects
from inferq.api.dialects import DIALECTS
from inferq.api.errors import RequestTimeout, status_of
from inferq.api.fireworks.translate import AlreadyExists, Forbidden
from inferq.core import errors
from inferq.core.errors import InferqError
from inferq.core.workflow_meta import DIALECT as WORKFLOWS

PATHS = {
    "/v1/queue/submit": "together",
    "/v1/queue/status": "together",
    "/v1/accounts/a/datasets": "fireworks",
    "/v1/accounts/a/batchInferenceJobs/j": "fireworks",
    "/v1/downloads/token": "fireworks",
    "/v1/uploads/token": "openai",  # the signed PUT answers its own errors
    "/v1/chat/completions": "openai",
    "/v1/messages": "anthropic",
    "/v1/messages/count_tokens": "anthropic",
    "/v1/files": "openai",
    "/v1/batches/b/cancel": "openai",
    "/v1/nothing": "openai",
    "/api/v1/jobs/": "unstructured",
    "/api/v1/templates/x": "unstructured",
    "/submit_job": "infera",
    "/chat/completions": "infera",
    "/healthz": "infera",
    "/": "infera",
    "*": "infera",
}


@pytest.mark.parametrize(("path", "name"), PATHS.items())
def test_each_path_gets_its_dialect(path: str, name: str) -> None:
    assert DIALECTS.for_path(path).name == name


def test_the_order_of_the_list_does_not_choose() -> None:
    backwards = Dialects(reversed(DIALECTS.all))
    assert all(backwards.for_path(path).name == name for path, name in PATHS.items())


@pytest.mark.parametrize(
    ("path", "upload"),
    [
        ("/v1/files", True),
        ("/v1/files/file-1", False),
        ("/v1/accounts/a/datasets/d:upload", True),
        ("/v1/uploads/token", True),
        ("/api/v1/jobs", True),
        ("/api/v1/jobs/", True),
        ("/api/v1/jobs/j", False),
        ("/v1/chat/completions", False),
    ],
)
def test_upload_paths(path: str, upload: bool) -> None:
    assert DIALECTS.is_upload(path) is upload


def test_own_body_limits() -> None:
    """Anthropic's message batch body may be 256 MB; other paths keep the app's limit."""
    assert DIALECTS.body_limit("/v1/messages/batches") == 256_000_000
    assert DIALECTS.body_limit("/v1/messages") is None
    assert DIALECTS.body_limit("/v1/messages/batches/x/cancel") is None
    assert DIALECTS.body_limit("/v1/files") is None


def test_kept_answers_are_the_same_and_bounded() -> None:
    """A path's rules are kept: asked again, the same; past PATHS_REMEMBERED paths the
    kept ones are dropped and worked out anew."""
    dialects = Dialects(DIALECTS.all)
    for _ in range(2):
        for path, name in PATHS.items():
            rules = dialects.rules(path)
            assert rules.dialect.name == name
            assert rules.is_upload is DIALECTS.is_upload(path)
            assert rules.body_limit == DIALECTS.body_limit(path)
    for n in range(PATHS_REMEMBERED + 10):
        dialects.rules(f"/v1/files/file-{n}")
    assert len(dialects._rules) <= PATHS_REMEMBERED
    assert dialects.rules("/v1/messages/batches").body_limit == 256_000_000


def test_the_runtime_gets_the_batch_formats_and_the_catalogue() -> None:
    plugins = DIALECTS.plugins()
    assert set(plugins.batch_formats) == {"openai", "fireworks", "anthropic"}
    assert "fast_partition" in plugins.workflows.templates
    assert DIALECTS.for_path("/api/v1/jobs").name == WORKFLOWS


def _dialect(name: str, *prefixes: str) -> Dialect:
    def render(exc: InferqError, status: int) -> JSONResponse:
        return JSONResponse({}, status_code=status)

    return Dialect(name=name, router=APIRouter(), prefixes=prefixes, render_error=render)


def test_a_prefix_claimed_twice_or_no_fallback_is_refused() -> None:
    with pytest.raises(ValueError, match="claimed by both a and b"):
        Dialects([_dialect("a", "", "/x"), _dialect("b", "/x")])
    with pytest.raises(ValueError, match="no dialect claims"):
        Dialects([_dialect("a", "/x")])


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.InferqError(), 500),
        (errors.InvalidRequest(), 400),
        (errors.AuthenticationFailed(), 401),
        (errors.NotFound(), 404),
        (errors.MethodNotAllowed(), 405),
        (errors.Conflict(), 409),
        (errors.PayloadTooLarge(), 413),
        (errors.QueueFull(), 429),
        (errors.ConfigError(), 500),
        (errors.DeadlineExceeded(), 408),
        (errors.StoreError(), 500),
        (errors.StoreUnavailable(), 503),
        (errors.EngineError(), 500),
        (errors.PromptTooLong(), 400),
        (errors.EngineUnavailable(), 503),
        (RequestTimeout(), 408),
        (AlreadyExists(), 409),
    ],
)
def test_the_status_of_each_error(error: InferqError, status: int) -> None:
    assert status_of(error) == status


def test_a_dialect_overrides_a_status() -> None:
    fireworks = DIALECTS.for_path("/v1/accounts/a/datasets")
    assert status_of(Forbidden(), fireworks.statuses) == 403
    assert status_of(Forbidden()) == 400  # a ClientError, to a dialect that does not know it
