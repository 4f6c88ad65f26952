"""One exception type for mistakes a user can fix; CLIs print it as one line and exit 2."""


class UserError(Exception):
    """Bad input (missing file, wrong flag, mismatched feature maps...): never a traceback."""
