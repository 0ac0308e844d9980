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


class RunPaused(Exception):
    """A training run stopped at its wall-clock limit (``--max-seconds``) after saving a
    complete checkpoint; the same command with ``--resume`` continues it.

    Not an error: a job scheduler's time slot ended. The CLI prints one line and exits with
    `EXIT_PAUSED` (75, EX_TEMPFAIL: "try again"), so a wrapper script can loop on it.
    """


EXIT_PAUSED = 75


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


def looks_like_local_path(name: str) -> bool:
    """Whether a model/data argument names a local path rather than a hub id (`org/name`).

    Hub ids have at most one `/` and never start with `.`, `/` or `~`; anything else that
    does not exist is a missing path, and must be reported as one, not handed to the hub
    client (whose answer is "Repo id must use alphanumeric chars").
    """
    s = str(name)
    return s.startswith((".", "/", "~")) or s.count("/") > 1 or s.endswith((".json", ".jsonl", ".yaml", ".gguf"))


def require_model_dir(path, field_name: str, hub_ok: bool = False, gguf_ok: bool = False):
    """A model argument: an existing directory with a config.json, (with `hub_ok`) a hub id, or
    (with `gguf_ok`) a `.gguf` file, which transformers dequantizes on load.

    Raises `UserError` naming `field_name` when the directory is missing or is not a model.
    """
    from pathlib import Path

    p = Path(str(path)).expanduser()
    if not str(path):
        raise field_error(field_name, "is required")
    if p.exists():
        if gguf_ok and p.is_file() and p.suffix == ".gguf":
            return p
        if not p.is_dir() or not (p / "config.json").exists():
            raise field_error(field_name, f"{str(p)!r} is not a model directory (no config.json)")
        return p
    if hub_ok and not looks_like_local_path(str(path)):
        return path  # a hub id; the hub client reports its own failures
    raise field_error(field_name, f"model directory {str(p)!r} does not exist")


class remove_if_left_empty:
    """Context manager: a directory this command creates is removed if the command fails leaving it empty.

    "Empty" means no file with content anywhere under it (an empty samples.jsonl or a
    config.yaml written before the failure does not count as output), so a failed first
    run leaves nothing behind, while a directory that existed before is never touched.
    """

    KEEP_SMALL = ("config.yaml",)

    def __init__(self, path):
        from pathlib import Path

        self.path = Path(path)
        self.existed = self.path.exists()

    def __enter__(self):
        return self.path

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None or self.existed or not self.path.is_dir():
            return False
        files = [f for f in self.path.rglob("*") if f.is_file()]
        if all(f.stat().st_size == 0 or f.name in self.KEEP_SMALL for f in files):
            import shutil

            shutil.rmtree(self.path, ignore_errors=True)
        return False
