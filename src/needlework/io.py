"""Plain-file plumbing shared by every stage: JSONL in/out, atomic writes, run metadata.

Outputs are written to a temporary file in the destination folder and renamed into place, so a
crash or Ctrl-C never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from needlework.config import validate
from needlework.errors import DataError, UserError, first_line

T = TypeVar("T")

_UMASK = os.umask(0)
os.umask(_UMASK)


def dumps(row: Any) -> str:
    """One canonical JSON line: stable across runs so equal data gives equal bytes."""
    return json.dumps(row, ensure_ascii=False, separators=(", ", ": "))


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def parse_jsonl_lines(lines: Iterable[str], source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, object)`` for each non-blank line; ``source`` names the file in errors.

    Errors are one line naming ``source:line``: invalid JSON, a non-object line, or bytes that
    are not UTF-8 / a broken gzip stream (raised while reading ``lines``).
    """
    try:
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                why = (
                    ""
                    if isinstance(row, dict)
                    else f"expected a JSON object, got {type(row).__name__}"
                )
            except json.JSONDecodeError as exc:
                why = f"invalid JSON ({exc.msg})"
            if why:
                raise DataError(f"{source}:{lineno}: {why}")
            yield lineno, row
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise DataError(f"{source}: cannot read as JSON lines ({exc})") from None


def check_creatable(path: str | Path, label: str | None = None) -> None:
    """``path`` can be made: its nearest existing ancestor is a writable folder (checked before
    slow work, so a bad output path fails in a second). Errors start with ``label`` (default
    the path)."""
    p = Path(path).resolve()
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    why = "is a file, not a folder" if not parent.is_dir() else "is not writable"
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{label or p}: cannot be created ({parent} {why})")


def require_file(path: str | Path, expected: str) -> Path:
    """``path`` if it is a regular file; else a one-line DataError saying what it is instead
    (missing, a folder, a device) and what was ``expected``."""
    p = Path(path)
    if p.is_file():
        return p
    what = (
        "is a folder" if p.is_dir() else "is not a regular file" if p.exists() else "file not found"
    )
    raise DataError(f"{p}: {what} (expected {expected})")


def iter_jsonl(
    path: str | Path, expected: str = "JSON lines"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, object)`` for every non-blank line of a ``.jsonl``/``.jsonl.gz`` file."""
    p = require_file(path, expected)
    with _open_text(p) as fh:
        yield from parse_jsonl_lines(fh, str(p))


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield JSON objects from a ``.jsonl`` or ``.jsonl.gz`` file; errors name file and line."""
    return (row for _, row in iter_jsonl(path))


def read_json(path: str | Path, tp: type[T]) -> T:
    """The JSON file at ``path`` as a ``tp`` (validated: a record of needlework.records); one
    line naming the file when it cannot be read, is not UTF-8 JSON or is not a ``tp``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: not UTF-8, not JSON
        why = first_line(exc)
        if isinstance(exc, UnicodeDecodeError):
            why = f"not UTF-8 text: {exc.reason} at byte {exc.start}"
        raise DataError(f"{path}: unreadable JSON ({why})") from None
    return validate(tp, data, source=str(path))


def ensure_writable_dir(path: str | Path) -> Path:
    """Create ``path`` (a folder) or fail with a one-line error before any work starts."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        why = "" if os.access(p, os.W_OK) else "output folder is not writable"
    except OSError as exc:
        why = f"cannot create output folder ({exc.strerror})"
    if why:
        raise UserError(f"{p}: {why}")
    return p


@contextlib.contextmanager
def exclusive_lock(path: str | Path, *, busy: str | None = None) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created) for the block, released on exit or death.

    ``busy`` None waits for the holder; a message makes a held lock fail at once with it (two
    processes must never run the same work into one folder). Where the OS or filesystem has no
    locks, nothing is locked: the atomic renames alone keep files whole.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    with Path(path).open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (fcntl.LOCK_NB if busy else 0))
        except BlockingIOError:
            raise UserError(busy or f"{path}: locked") from None
        except OSError:  # e.g. a filesystem without locks
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def make_temp_file(parent: str | Path, prefix: str, suffix: str) -> tuple[int, str]:
    """``mkstemp`` in ``parent`` with the normal file mode (``0o666`` less the umask; mkstemp
    makes it 0600, and the file is renamed into an output that others are meant to read)."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
    os.chmod(tmp, 0o666 & ~_UMASK)
    return fd, tmp


def make_temp_dir(parent: str | Path, prefix: str, suffix: str) -> Path:
    """A fresh uniquely named folder in ``parent`` with the normal folder mode (``0o777`` less
    the umask): ``mkdtemp`` makes it 0700, and a staging folder is renamed into a final output
    that others are meant to read."""
    path = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    try:
        os.chmod(path, 0o777 & ~_UMASK)
    except OSError:
        os.rmdir(path)
        raise
    return path


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temp file beside ``path``; rename over it only if the block succeeds."""
    p = Path(path)
    ensure_writable_dir(p.parent)
    fd, tmp = make_temp_file(p.parent, f".{p.name}.", ".tmp")
    try:
        kwargs: dict[str, Any] = {} if "b" in mode else {"encoding": "utf-8"}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Stream rows into ``path`` atomically; returns the number of rows written."""
    n = 0
    with atomic_write(path) as fh:
        for row in rows:
            fh.write(dumps(row) + "\n")
            n += 1
    return n


def write_json(path: str | Path, obj: Any) -> None:
    """Pretty JSON, atomically."""
    with atomic_write(path) as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=2)
        fh.write("\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path) as fh:
        fh.write(text)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """A hidden folder beside ``target`` that replaces it only if the block succeeds.

    The staging folder holds an flock for as long as its run lives, so the leftovers of a run
    killed with ``kill -9`` (whose cleanup never ran) are told apart from a live run's and
    removed by the next run."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_stages(target)
        stage = make_temp_dir(target.parent, f".{target.name}.", ".tmp")
    except OSError as exc:
        raise UserError(f"{target}: cannot create the output folder ({exc.strerror})") from None
    try:
        with exclusive_lock(stage / STAGE_LOCK):
            yield stage
        (stage / STAGE_LOCK).unlink(missing_ok=True)
        old = None
        if target.exists():
            old = make_temp_dir(target.parent, f".{target.name}.", ".old")
            os.replace(target, old / "previous")
        os.replace(stage, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


STAGE_LOCK = ".needlework-staging.lock"


def _remove_dead_stages(target: Path) -> None:
    """Remove staging folders of ``target`` left by killed runs (their lock is free)."""
    try:
        import fcntl
    except ImportError:
        return
    for stage in target.parent.glob(f".{target.name}.*.tmp"):
        lock = stage / STAGE_LOCK
        if not lock.is_file():  # killed between mkdtemp and the lock, or before this version
            with contextlib.suppress(OSError):
                if time.time() - stage.stat().st_mtime > 60:  # not one being set up right now
                    shutil.rmtree(stage, ignore_errors=True)
            continue
        with lock.open("a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a live run holds it (or locks are unsupported: keep it)
                continue
        shutil.rmtree(stage, ignore_errors=True)
