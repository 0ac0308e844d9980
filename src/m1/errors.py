"""User errors: what the command line prints as one line, `m1 <command>: error: ...`, exit 2.

A user error is a mistake in what was asked for (a bad option value, a missing path, a
malformed data line), as opposed to a bug. The CLI prints it as one line that names the
field, the path or the file:line, with no traceback; `m1 --debug <command>` (or
`M1_DEBUG=1`) shows the traceback as well. Every error class that signals a user mistake
derives from `UserError`, so `m1.cli` needs to know only this one class.

The Python API raises the same exceptions; only the CLI turns them into one line.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake in the user's input. `str(err)` is the whole message a user sees.

    It derives from ValueError so callers of the Python API that catch ValueError keep
    working.
    """


def field_error(field_name: str, message: str) -> UserError:
    """`UserError` whose message starts with the option or field it is about."""
    return UserError(f"{field_name}: {message}")


def require_path(path, what: str, field_name: str | None = None):
    """Raise `UserError` unless `path` exists; the message says it is missing."""
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        prefix = f"{field_name}: " if field_name else ""
        raise UserError(f"{prefix}{what} {str(p)!r} does not exist")
    return p
