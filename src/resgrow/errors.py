"""One exception type for every problem a user can fix: bad input, bad data, a bad checkpoint.

The CLI prints its message as a single line and exits non-zero; library users can catch it.
"""


class ResgrowError(Exception):
    """A user-facing error whose message names the problem and, where possible, the fix."""


class DivergedError(ResgrowError):
    """The training loss became NaN or inf; the last good checkpoint is kept."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (or its type name), to quote inside a one-line error."""
    lines = str(e).strip().splitlines()
    return lines[0][:limit] if lines else type(e).__name__
