"""One exception type for problems the user can fix (bad file, bad field, missing model).

The CLI prints these as a single line and exits 2; everything else is a bug and keeps its traceback.
"""


class SidrecError(Exception):
    """A user-facing error: the message names the file/line/field and what to do."""


def where(path, line: int | None = None) -> str:
    return f"{path}:{line}" if line is not None else str(path)
