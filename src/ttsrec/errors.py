"""Two families of failure, so a caller (and an exit code) can tell whose fault it is.

- `UserError`: bad input the user can fix (missing file, wrong flag, mismatched feature maps...).
  CLIs print it as one line and exit 2.
- `RuntimeFailure`: the input was fine but the world was not (server down, timeout, a lock held by
  another process, a crashed worker). CLIs print it as one line and exit 1.

Library code raises these and never names CLI flags' consoles or prints; the CLI layer decides.
"""


class UserError(Exception):
    """Bad input: never a traceback, exit code 2."""


class RuntimeFailure(Exception):  # noqa: N818 (the name says which family; 'Error' would blur it)
    """A runtime fault (unavailable, timed out, busy, crashed): never a traceback, exit code 1."""
