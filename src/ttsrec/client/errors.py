"""Client failures in the project's two families, each naming the server and the model.

- `ClientError` (a `UserError`, exit 2): the request is wrong: bad shape or dtype, unknown model,
  a feature map that does not match the server's, shards that must not be mixed.
- `ClientRuntimeError` (a `RuntimeFailure`, exit 1): the request was fine but the server was not:
  `ServerUnavailableError` (refused, reset, stub unhealthy), `DeadlineExceededError` (no answer in time),
  `RequestRejectedError` (the server's queue policy shed it), `ShardsFailedError` (too few shards answered).

`CLIENT_ERRORS` catches both. `bad_input` and `timed_out` stay as attributes for callers that test them.
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
