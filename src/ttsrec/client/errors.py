"""Client failures in the project's two families, each naming the server and the model.

- `ClientError` (a `UserError`, exit 2): the request is wrong: bad shape or dtype, unknown model,
  a feature map that does not match the server's, shards that must not be mixed.
- `ClientRuntimeError` (a `RuntimeFailure`, exit 1): the request was fine but the server was not:
  `ServerUnavailableError` (refused, reset, stub unhealthy), `DeadlineExceededError` (no answer in time),
  `RequestRejectedError` (the server's queue policy shed it), `ShardsFailedError` (too few shards answered).

`CLIENT_ERRORS` catches both. `bad_input` and `timed_out` stay as attributes for callers that test them.
`translate(err, url=, model=, protocol=, timeout_s=)` turns any tritonclient/gRPC/socket error into one
of the two families.
"""

from __future__ import annotations

from ttsrec.errors import RuntimeFailure, UserError


def _where(url: str, model: str) -> str:
    return f"{model} at {url}: " if url and model else (f"{model or url}: " if model or url else "")


class ClientError(UserError):
    """Bad input: the request or the setup is wrong, retrying will not help (exit 2)."""

    bad_input = True
    timed_out = False

    def __init__(self, message: str, *, url: str = "", model: str = ""):
        super().__init__(f"{_where(url, model)}{message}")
        self.url, self.model = url, model


class ClientRuntimeError(RuntimeFailure):
    """The server did not answer as it should (exit 1); the cause is in the message."""

    bad_input = False
    timed_out = False

    def __init__(self, message: str, *, url: str = "", model: str = ""):
        super().__init__(f"{_where(url, model)}{message}")
        self.url, self.model = url, model


class ServerUnavailableError(ClientRuntimeError):
    """Connection refused or reset, server shutting down, python stub unhealthy: worth one retry."""


class DeadlineExceededError(ClientRuntimeError):
    """No answer within the deadline (the client's, or the server's request timeout)."""

    timed_out = True


class RequestRejectedError(ClientRuntimeError):
    """The server's queue policy refused the request (queue full, or queued past its timeout)."""


class ShardsFailedError(ClientRuntimeError):
    """Fewer shards or members answered than the request needs; `failed` maps url -> cause."""

    def __init__(self, message: str, *, failed: dict[str, str], model: str = ""):
        super().__init__(message, model=model)
        self.failed = dict(failed)


CLIENT_ERRORS = (ClientError, ClientRuntimeError)


_FAMILY_OF_CODE: dict[str, type[ClientError | ClientRuntimeError]] = {
    "DEADLINE_EXCEEDED": DeadlineExceededError, "UNAVAILABLE": ServerUnavailableError,
    "INVALID_ARGUMENT": ClientError, "NOT_FOUND": ClientError,
    "503": ServerUnavailableError, "404": ClientError,
}
"""Status codes that say the family by themselves: gRPC's (tritonclient's `StatusCode.X` or a raw
`grpc.RpcError`'s code) and HTTP's. Triton 2.51 answers most failed HTTP inferences with 400 and a
dead python stub with INTERNAL, so those (and UNKNOWN, 500, no code at all) fall back to the message."""

_REJECTED_WORDS = ("exceeds maximum queue size", "request timeout expired", "timeout expired")
"""Triton refuses by its queue policy with UNAVAILABLE (gRPC) or 400 (HTTP): only the message tells."""
_BAD_INPUT_WORDS = ("unknown model", "is not found", "unexpected shape", "unexpected datatype",
                    "unexpected inference input", "unexpected inference output", "invalid argument",
                    "inconsistent", "byte size", "unable to find", "not supported")
_DEADLINE_WORDS = ("deadline exceeded", "deadline", "timed out", "timeout")
_UNREACHABLE_WORDS = ("failed to connect", "connection refused", "name resolution", "no route to host",
                      "network is unreachable")
_UNAVAILABLE_WORDS = ("unavailable", "failed to connect", "connection refused", "connection reset",
                      "not healthy", "socket closed", "broken pipe", "server is not ready", "shutting down",
                      "name resolution", "no route to host", "network is unreachable", "end of stream")


def _message(err: BaseException) -> str:
    if callable(getattr(err, "message", None)):  # tritonclient
        msg = err.message()
    elif callable(getattr(err, "details", None)):  # grpc.RpcError (the bench's raw channels)
        msg = err.details()
    else:
        msg = str(err)
    msg = (msg or "").strip()
    return msg.splitlines()[0] if msg else type(err).__name__


def status_code(err: BaseException) -> str:
    """The error's status code as one string: a gRPC code's name (`UNAVAILABLE`, from tritonclient's
    `StatusCode.UNAVAILABLE` or a `grpc.RpcError`), an HTTP status (`503`), or "" when it has none."""
    if callable(getattr(err, "status", None)):  # tritonclient: "StatusCode.X" (gRPC) or "503" (HTTP)
        status = err.status()
    elif callable(getattr(err, "code", None)):  # grpc.RpcError: a grpc.StatusCode
        status = err.code()
    else:
        return ""
    return str(getattr(status, "name", None) or status or "").removeprefix("StatusCode.")


def _family(err: BaseException, code: str, low: str) -> type[ClientError | ClientRuntimeError]:
    """By the status code where it decides, else by the error's type and message (sockets, gevent,
    aiohttp and the codes Triton reuses carry nothing else)."""
    if any(w in low for w in _REJECTED_WORDS):
        return RequestRejectedError
    if code in _FAMILY_OF_CODE:
        return _FAMILY_OF_CODE[code]
    if "Timeout" in type(err).__name__ or any(w in low for w in _DEADLINE_WORDS):
        return DeadlineExceededError
    if isinstance(err, ConnectionError | OSError) or any(w in low for w in _UNAVAILABLE_WORDS):
        return ServerUnavailableError
    if any(w in low for w in _BAD_INPUT_WORDS):
        return ClientError
    return ClientRuntimeError


def translate(err: BaseException, *, url: str = "", model: str = "", protocol: str = "",
              timeout_s: float | None = None) -> ClientError | ClientRuntimeError:
    """Any failure of a call as one of the two client families, naming url, model and protocol."""
    if isinstance(err, ClientError | ClientRuntimeError):
        return err
    text = _message(err)
    low = text.lower()
    family = _family(err, status_code(err), low)
    tag = f" [{protocol}]" if protocol else ""
    where = {"url": url, "model": model}
    if family is RequestRejectedError:
        return RequestRejectedError(f"rejected by the server's queue policy ({text}){tag}", **where)
    if family is DeadlineExceededError:
        within = f"within {timeout_s:g}s " if timeout_s else ""
        return DeadlineExceededError(f"no answer {within}({text}){tag}", **where)
    if family is ServerUnavailableError:
        what = "unreachable" if any(w in low for w in _UNREACHABLE_WORDS) else "unavailable"
        return ServerUnavailableError(f"server {what} ({text}){tag}", **where)
    return family(f"{text}{tag}", **where)
