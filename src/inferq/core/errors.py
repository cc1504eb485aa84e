"""The one exception tree of inferq.

Services and adapters raise these; only the API layer turns them into a dialect's
error body and an HTTP status (:data:`inferq.api.errors.STATUS` maps the classes to
statuses; a dialect may override one). Nothing here knows HTTP. Adapters wrap
foreign errors with ``raise ... from exc`` so the cause stays visible in logs.

::

    InferqError
    ├── ClientError                 the request is wrong; retrying it cannot help
    │   ├── InvalidRequest          a field is missing, malformed or out of range
    │   ├── AuthenticationFailed    no key, or a key that does not exist or is revoked
    │   ├── NotFound                the thing does not exist *for this tenant*
    │   ├── MethodNotAllowed        the path exists, the method does not
    │   ├── Conflict                the thing is in a state that forbids the action
    │   ├── PayloadTooLarge         the body is over the configured limit
    │   └── QueueFull               the tenant's queue is at its bound (retry later)
    ├── ConfigError                 the settings or models file are wrong (startup)
    ├── DeadlineExceeded            a sync request ran past the deadline its client chose
    ├── StoreError                  the job store failed
    │   └── StoreUnavailable        it cannot be reached (retry shortly)
    └── EngineError                 a model engine failed to run a request
        ├── PromptTooLong           the prompt does not fit the model's context (not retried)
        └── EngineUnavailable       the engine is not loaded or cannot be reached

Each class's docstring is its default message.
"""

from __future__ import annotations


class InferqError(Exception):
    """Something went wrong in inferq."""

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

    code = "invalid_request"


class InvalidRequest(ClientError):
    """The request is invalid."""


class AuthenticationFailed(ClientError):
    """A valid API key is required."""

    code = "invalid_api_key"


class NotFound(ClientError):
    """Not found."""

    code = "not_found"


class MethodNotAllowed(ClientError):
    """This HTTP method is not allowed here."""

    code = "method_not_allowed"


class Conflict(ClientError):
    """The resource is in a state that does not allow this action."""

    code = "conflict"


class PayloadTooLarge(ClientError):
    """The request body is larger than the configured limit."""

    code = "payload_too_large"


class QueueFull(ClientError):
    """Too many queued jobs; retry later."""

    code = "rate_limit_exceeded"

    def __init__(self, message: str | None = None, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(InferqError):
    """The configuration is invalid."""

    code = "config_error"


class DeadlineExceeded(InferqError):
    """The request did not finish before its deadline."""

    code = "timeout"


class StoreError(InferqError):
    """The job store failed."""

    code = "store_error"


class StoreUnavailable(StoreError):
    """The job store is unavailable; retry shortly."""

    code = "service_unavailable"


class EngineError(InferqError):
    """The model engine failed to run the request."""

    code = "engine_error"
    #: whether running the same request again may succeed
    retryable: bool = False


class PromptTooLong(EngineError):
    """The prompt and max_tokens do not fit in the model's context window."""

    code = "context_length_exceeded"


class EngineUnavailable(EngineError):
    """The model engine is not available."""

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
