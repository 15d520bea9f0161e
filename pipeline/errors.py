"""One exception type for problems the user can fix; everything else is a bug.

The CLI prints a ``UserError`` as one line and exits with its code, never a traceback.
Messages name files, columns, row numbers and counts, never patient ids or values.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INPUT_UNUSABLE = 1
EXIT_USAGE = 2


class UserError(Exception):
    """An input or configuration problem the user can correct."""

    def __init__(self, message: str, exit_code: int = EXIT_INPUT_UNUSABLE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type, tuple[str, int]]:
        """Keep the exit code when the error travels back from a Dask worker."""
        return (UserError, (self.message, self.exit_code))
