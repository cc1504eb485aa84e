"""The one exception tree of inferq.

Services and adapters raise these; only the API layer turns them into a dialect's
error body (each dialect has one renderer). Adapters wrap foreign errors with
``raise ... from exc`` so the cause stays visible in logs.

::

    InferqError
    ├── ClientError                 the request is wrong; a 4xx, never retried
    │   ├── InvalidRequest          a field is missing, malformed or out of range (400)
    │   ├── AuthenticationFailed    no key, or a key that does not exist or is revoked (401)
    │   ├── NotFound                the thing does not exist *for this tenant* (404)
    │   ├── MethodNotAllowed        the path exists, the HTTP method does not (405)
    │   ├── Conflict                the thing is in a state that forbids the action (409)
    │   ├── PayloadTooLarge         the body is over the configured limit (413)
    │   └── QueueFull               the tenant's queue is at its bound (429)
    ├── ConfigError                 the settings or models file are wrong (startup)
    ├── DeadlineExceeded            a sync request ran past its deadline (408 / 504)
    ├── StoreError                  the job store failed (503 when unreachable)
    │   └── StoreUnavailable
    └── EngineError                 a model engine failed to run a request
        ├── PromptTooLong           the prompt does not fit the model's context (not retried)
        └── EngineUnavailable       the engine is not loaded or cannot be reached

Each class's docstring is its default message.
"""

from __future__ import annotations


class InferqError(Exception):
    """Something went wrong in inferq."""

    #: HTTP status the API layer uses unless a dialect overrides it.
    status_code: int = 500
    #: machine-readable code rendered by the dialects
    code: str = "internal_error"

    def __init__(self, message: str | None = None, *, param: str | None = None) -> None:
        if not message:
            message = (self.__doc__ or "").strip().splitlines()[0]
        super().__init__(message)
        self.message = message
        #: the request field the error is about, when there is one
        self.param = param


class ClientError(InferqError):
    """The request is invalid."""

    status_code = 400
    code = "invalid_request"


class InvalidRequest(ClientError):
    """The request is invalid."""


class AuthenticationFailed(ClientError):
    """A valid API key is required."""

    status_code = 401
    code = "invalid_api_key"


class NotFound(ClientError):
    """Not found."""

    status_code = 404
    code = "not_found"


class MethodNotAllowed(ClientError):
    """This HTTP method is not allowed here."""

    status_code = 405
    code = "method_not_allowed"


class Conflict(ClientError):
    """The resource is in a state that does not allow this action."""

    status_code = 409
    code = "conflict"


class PayloadTooLarge(ClientError):
    """The request body is larger than the configured limit."""

    status_code = 413
    code = "payload_too_large"


class QueueFull(ClientError):
    """Too many queued jobs; retry later."""

    status_code = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str | None = None, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(InferqError):
    """The configuration is invalid."""

    code = "config_error"


class DeadlineExceeded(InferqError):
    """The request did not finish before its deadline."""

    status_code = 408
    code = "timeout"


class StoreError(InferqError):
    """The job store failed."""

    code = "store_error"


class StoreUnavailable(StoreError):
    """The job store is unavailable; retry shortly."""

    status_code = 503
    code = "service_unavailable"


class EngineError(InferqError):
    """The model engine failed to run the request."""

    code = "engine_error"
    #: whether running the same request again may succeed
    retryable: bool = False


class PromptTooLong(EngineError):
    """The prompt and max_tokens do not fit in the model's context window."""

    status_code = 400
    code = "context_length_exceeded"


class EngineUnavailable(EngineError):
    """The model engine is not available."""

    status_code = 503
    code = "engine_unavailable"
    retryable = True


def public(exc: InferqError) -> InferqError:
    """``exc`` as a client may see it: a store's own error text (which can echo the
    request's data and the database's internals) is logged, never sent."""
    if isinstance(exc, StoreError):
        return type(exc)()  # the class's own message
    # a message may quote the client's own text: keep it writable as UTF-8 JSON
    for field in ("message", "param"):
        value = getattr(exc, field)
        if value is not None and not value.isascii():
            setattr(exc, field, value.encode("utf-8", "backslashreplace").decode("utf-8"))
    return exc
