"""One exception type for problems the user can fix (bad file, bad field, missing model).

The CLI prints these as a single line and exits 2; everything else is a bug and keeps its traceback.
"""


class SidrecError(Exception):
    """A user-facing error: the message names the file/line/field and what to do."""


def where(path, line: int | None = None) -> str:
    return f"{path}:{line}" if line is not None else str(path)


# ---------------------------------------------------------------------------------------------------- bad files
# What a failing file operation means for the user, and what to do about it; by errno.
_OS_PROBLEMS = {
    "ENOSPC": ("no space left on the device", "free some space or write the output elsewhere (--out)"),
    "EDQUOT": ("disk quota exceeded", "free some space or write the output elsewhere (--out)"),
    "EROFS": ("read-only file system", "write the output to a writable folder (--out)"),
    "EACCES": ("permission denied", "fix the permissions or use a folder you can write to (--out)"),
    "EPERM": ("operation not permitted", "fix the permissions or use a folder you can write to (--out)"),
    "ELOOP": ("too many levels of symbolic links (a link loop)", "fix or remove the symbolic link"),
    "EISDIR": ("is a folder where a file is expected", "pass the file, not the folder"),
    "ENOTDIR": ("a part of the path is a file where a folder is expected", "check the path"),
    "ENOENT": ("does not exist", "check the path"),
    "ENAMETOOLONG": ("file name too long", "use a shorter path"),
    "EIO": ("input/output error", "check the disk"),
}
REMAKE = ("the file is empty, truncated or not this kind of file: re-create it (re-run the stage that wrote it, or "
          "re-download it)")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def file_problem(e: BaseException, path=None) -> str | None:
    """One line saying which file is bad and what to do, for an exception that a bad, missing or unwritable file
    causes (an OSError, undecodable text, a JSON/YAML/Parquet/safetensors/.npy parse error); None for anything else,
    which is a bug and keeps its traceback. `path` names the file when the exception does not."""
    import errno as _errno

    if isinstance(e, SidrecError):
        return str(e)
    if isinstance(e, OSError) and not _is_parse_error(e):
        name = _errno.errorcode.get(e.errno or -1)
        where_ = e.filename if e.filename is not None else path
        prefix = f"{where_}: " if where_ is not None else ""
        if name in _OS_PROBLEMS:
            what, fix = _OS_PROBLEMS[name]
            return f"{prefix}{what}; {fix}"
        if e.errno is None or where_ is not None:  # a library's "cannot load X" or an unusual errno on a named file
            return f"{prefix}{_first_line(e)}"
        return None
    prefix = f"{path}: " if path is not None else ""
    if isinstance(e, UnicodeDecodeError):
        byte = e.object[e.start:e.start + 1].hex() if isinstance(e.object, (bytes, bytearray)) else "?"
        return f"{prefix}not UTF-8 text (byte 0x{byte} at offset {e.start}); save the file as UTF-8"
    if _is_parse_error(e):
        return f"{prefix}cannot be parsed ({type(e).__name__}: {_first_line(e)}); {REMAKE}"
    return None


def _is_parse_error(e: BaseException) -> bool:
    """A parser's complaint about a file's content: JSON, YAML, Parquet/Arrow, safetensors, numpy's .npy/.npz, gzip."""
    import json
    import zlib

    if isinstance(e, (json.JSONDecodeError, EOFError, zlib.error)):
        return True
    module, name = type(e).__module__, type(e).__name__
    if module.startswith(("yaml", "safetensors")) or name in ("SafetensorError", "BadGzipFile", "BadZipFile"):
        return True
    if module.startswith("pyarrow") and any(w in str(e).lower() for w in ("parquet", "magic", "footer", "thrift")):
        return True
    return False
