"""Client failures as user-facing errors that name the server and the model."""

from __future__ import annotations

from ttsrec.errors import UserError


class ClientError(UserError):
    """A request failed: bad input (`bad_input`), unknown model, server down, or timeout (`timed_out`)."""

    def __init__(self, message: str, *, url: str = "", model: str = "", timed_out: bool = False,
                 bad_input: bool = False):
        where = f"{model} at {url}: " if url and model else (f"{model or url}: " if model or url else "")
        super().__init__(f"{where}{message}")
        self.url = url
        self.model = model
        self.timed_out = timed_out
        self.bad_input = bad_input
