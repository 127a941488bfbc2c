"""Writing outputs safely: every output of vqaudio appears complete or not at all, and a failed or interrupted
run leaves the previous output as it was.

Every writer of vqaudio (audio, model files, token files, manifests, reports, checkpoints, folders of WAVs)
goes through this module:

    check_output      before the long work: refuse an existing output without ``overwrite``, a folder where a
                      file goes (and the reverse), a folder that cannot be written; remove temporaries of the
                      same output that a killed run (kill -9, power loss) left behind
    atomic_path       one file: written under a temporary name, renamed into place
    OutputFiles       files replaced together (a token file's three, a manifest and its splits): all renamed
                      in one commit, the previous files restored if any rename fails
    atomic_folder     a folder replaced as a whole (resynth, demo, prior samples, eval reports)

Temporaries sit beside their output under a hidden name that says whose they are,
``.NAME.vqtmp-PID-HOST-XXXXXXXX[.suffix]``, so a later run of the same output can tell leftovers of a dead
process from the files of a run still going. They are created private (0600 / 0700) and given the umask's
mode (0666 / 0777 & ~umask) before the rename. The renames of a commit run with Ctrl-C and SIGTERM deferred,
so a signal never cuts a commit or its rollback in half. OS errors of writing (full disk, read-only or
forbidden folder, a folder in the way) become one-line ``OutputError``s naming the output.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from vqaudio.errors import OutputError

log = logging.getLogger(__name__)

TEMP_TAG = "vqtmp"
_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:16]
_STALE = re.compile(rf"{TEMP_TAG}-(\d+)-([A-Za-z0-9]*)-[A-Za-z0-9_]{{8}}(\..*)?")
_LOW_SPACE = 1 << 20  # a writer that fails with less free space than this ran out of space


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every cleanup of an interrupted write runs."""


# --------------------------------------------------------------------------------------------------
# Outputs of the current command: what an interruption leaves (the CLI prints it)
# --------------------------------------------------------------------------------------------------
_planned: dict[Path, bool] = {}  # output -> written


def outputs_state() -> tuple[list[Path], list[Path]]:
    """(written, not written) among the outputs checked with ``check_output`` since ``reset_outputs``."""
    return [p for p, done in _planned.items() if done], [p for p, done in _planned.items() if not done]


def reset_outputs() -> None:
    _planned.clear()


def _mark_written(path: Path) -> None:
    if path in _planned:
        _planned[path] = True


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------
def output_error(path: str | Path, exc: BaseException) -> OutputError:
    """An OS error (or a writer library's error on a full disk) while writing ``path`` -> one-line OutputError."""
    path = Path(path)
    if isinstance(exc, OutputError):
        return exc
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None and _free_bytes(path.parent) < _LOW_SPACE:
        code = errno.ENOSPC  # libsndfile and torch report a full disk as "System error." / "enforce fail"
    reasons = {
        errno.ENOSPC: "no space left on the device; free some space or write the output elsewhere",
        errno.EDQUOT: "the disk quota is exceeded; free some space or write the output elsewhere",
        errno.EFBIG: "the file is too large for this file system; write the output elsewhere",
        errno.EROFS: "the file system is read-only; choose an output folder on a writable disk",
        errno.EACCES: "permission denied; check the folder's permissions or choose another output",
        errno.EPERM: "operation not permitted (an immutable or protected file?); check `lsattr` and the "
        "folder's permissions, or choose another output",
        errno.EISDIR: "it is a folder; give a file name, or remove the folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder; choose another output",
        errno.ENOTEMPTY: "it appeared while this run was writing (another run writing the same output?); "
        "nothing was replaced: pass --overwrite to replace it, or choose another output",
        errno.EEXIST: "it appeared while this run was writing (another run writing the same output?); "
        "nothing was replaced: pass --overwrite to replace it, or choose another output",
    }
    if code in reasons:
        reason = reasons[code]
    else:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip()
        reason = (detail.splitlines() or [type(exc).__name__])[-1]
    error = OutputError(code or 0, f"cannot write {path}: {reason}")
    error.filename = str(path)
    return error


def concerns_output(exc: BaseException, *outputs: Path) -> bool:
    """Whether an OS error is about one of ``outputs`` (a file or folder, its contents, its temporaries) rather
    than another file, such as an input the block was reading. An error naming no file counts: a full disk or a
    writer library's failure does not name one."""
    names = [getattr(exc, "filename", None), getattr(exc, "filename2", None)]
    named = [Path(os.fsdecode(name)) for name in names if isinstance(name, (str, bytes, os.PathLike))]
    if not named:
        return True
    for name in named:
        for output in outputs:
            if name == output or output in name.parents:
                return True
            if name.parent == output.parent and name.name.startswith(f".{output.name}.{TEMP_TAG}-"):
                return True
    return False


@contextmanager
def writing_to(path: str | Path) -> Iterator[None]:
    """Within the block, OS errors become an OutputError naming ``path`` (the output, not a temporary)."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        raise output_error(path, exc) from exc


def _free_bytes(folder: Path) -> int:
    try:
        stats = os.statvfs(folder)
    except OSError:
        return _LOW_SPACE  # unknown: do not claim a full disk
    return (stats.f_bfree if os.geteuid() == 0 else stats.f_bavail) * stats.f_frsize


# --------------------------------------------------------------------------------------------------
# Signals: a commit is never cut in half
# --------------------------------------------------------------------------------------------------
@contextmanager
def signals_deferred() -> Iterator[None]:
    """Within the block, Ctrl-C and SIGTERM are held back; they take effect when it ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


# --------------------------------------------------------------------------------------------------
# Temporaries
# --------------------------------------------------------------------------------------------------
def _prefix(final: Path) -> str:
    return f".{final.name}.{TEMP_TAG}-{os.getpid()}-{_HOST}-"


def temporary_file(final: str | Path, suffix: str = ".tmp") -> Path:
    """A new empty private file beside ``final`` (same file system, so it can be renamed onto it)."""
    final = Path(final)
    with writing_to(final):
        handle, name = tempfile.mkstemp(prefix=_prefix(final), suffix=suffix, dir=final.parent)
        os.close(handle)
    return Path(name)


def _temporary_name(final: Path, suffix: str) -> Path:
    """A name for a temporary that does not exist yet (for os.link / os.replace targets)."""
    return final.with_name(f"{_prefix(final)}{secrets.token_hex(4)}{suffix}")


def remove_stale_temporaries(final: str | Path) -> list[Path]:
    """Remove temporaries of ``final`` left by a process that is gone (killed, or the machine went down).

    Temporaries of a live process (another run writing the same output) and of another host are kept.
    Returns the removed paths; a warning names them.
    """
    final = Path(final)
    start = f".{final.name}.{TEMP_TAG}-"
    try:
        names = [name for name in os.listdir(final.parent) if name.startswith(start)]
    except OSError:
        return []
    removed: list[Path] = []
    for name in sorted(names):
        match = _STALE.fullmatch(name[len(start) - len(TEMP_TAG) - 1 :])
        if not match or match.group(2) != _HOST or _alive(int(match.group(1))):
            continue
        path = final.parent / name
        try:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        except OSError as exc:
            log.warning("%s: a temporary left by an interrupted run, could not be removed (%s)", path, exc)
            continue
        removed.append(path)
    if removed:
        log.warning(
            "removed %d temporar%s of %s left by an interrupted earlier run: %s",
            len(removed),
            "y" if len(removed) == 1 else "ies",
            final,
            ", ".join(path.name for path in removed),
        )
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


# --------------------------------------------------------------------------------------------------
# Before the work
# --------------------------------------------------------------------------------------------------
def check_output(
    path: str | Path,
    *,
    overwrite: bool,
    folder: bool = False,
    replaceable: Callable[[Path], bool] | None = None,
    what: str = "",
) -> Path:
    """Check, before any long work, that ``path`` can be written; remove its stale temporaries.

    Args:
        path: the output file, or folder with ``folder=True``.
        overwrite: an existing output may be replaced (an empty folder is not an output to protect).
        folder: the output is a folder, replaced as a whole.
        replaceable: for a folder, whether each file in it (a path relative to it) is one this command
            writes; a folder holding anything else is never replaced, even with ``overwrite``.
        what: the command, for messages (e.g. "`vqaudio resynth`").
    Returns:
        ``path`` as a Path.
    Raises:
        FileExistsError: the output exists and ``overwrite`` is False.
        OutputError: a folder where a file goes or the reverse, a folder that cannot be written, a folder
            holding files the command does not write.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        if folder and not path.is_dir():
            raise FileExistsError(f"{path} exists and is not a folder; the output here is a folder")
        if not folder and path.is_dir():
            raise output_error(path, IsADirectoryError(errno.EISDIR, "is a folder"))
        if folder:
            _check_replaceable_folder(path, overwrite, replaceable, what)
        elif not overwrite:
            raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")
    check_writable(path.parent, output=path)
    remove_stale_temporaries(path)
    if not any(f".{TEMP_TAG}-" in part for part in path.parts):  # not a part of a staged folder
        _planned.setdefault(path, False)
    return path


def _check_replaceable_folder(
    path: Path, overwrite: bool, replaceable: Callable[[Path], bool] | None, what: str
) -> None:
    contents = sorted(path.rglob("*"))
    if not contents:
        return
    resolved, here = path.resolve(), Path.cwd().resolve()
    if resolved == here or resolved in here.parents or os.path.ismount(path):
        raise OutputError(
            errno.EBUSY,
            f"{path} is the current folder, holds it, or is a mount point; it cannot be replaced as a "
            "whole: choose a new output folder",
        )
    if not overwrite:
        raise FileExistsError(
            f"{path} already exists and is not empty; pass --overwrite to replace it (as a whole)"
        )
    if replaceable is not None:
        for item in contents:
            relative = item.relative_to(path)
            if item.is_file() and not item.is_symlink() and not replaceable(relative):
                if TEMP_TAG in item.name and item.name.startswith("."):
                    continue
                raise OutputError(
                    errno.EEXIST,
                    f"{path} holds {relative}, which {what or 'this command'} does not write; refusing to "
                    "replace the folder: move that file away or choose another output folder",
                )
            if item.is_symlink() or not (item.is_file() or item.is_dir()):
                raise OutputError(
                    errno.EEXIST,
                    f"{path} holds {relative} (a link or special file); refusing to replace the folder: "
                    "choose another output folder",
                )


def check_writable(folder: str | Path, output: str | Path | None = None) -> None:
    """Raise OutputError unless files can be created in ``folder`` (or, if it does not exist yet, in the
    nearest folder above it that does, where it would be created).

    A temporary file is created and removed: this catches read-only disks, missing permissions and
    files in the way, also for root (whom ``os.access`` lets through) and on network file systems. The
    message names ``output`` (default: ``folder``).
    """
    folder = Path(folder)
    named = folder if output is None else Path(output)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise output_error(named, NotADirectoryError(errno.ENOTDIR, "not a folder"))
    with writing_to(named):
        handle, name = tempfile.mkstemp(prefix=f".vqaudio-probe.{TEMP_TAG}-", dir=probe)
        os.close(handle)
        os.unlink(name)


# --------------------------------------------------------------------------------------------------
# One file
# --------------------------------------------------------------------------------------------------
@contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    An exception or Ctrl-C inside the block leaves no partial file behind, and an existing ``path`` as it
    was. OS errors (and a writer library's failure on a full disk) become an OutputError naming ``path``.
    """
    with OutputFiles([path], overwrite=True) as files:
        yield files.stage(path, suffix or Path(path).suffix or ".tmp")


# --------------------------------------------------------------------------------------------------
# Files replaced together
# --------------------------------------------------------------------------------------------------
class OutputFiles:
    """Files written under temporary names and renamed into place together, or not at all.

    Use as a context manager (leaving the block normally commits, an exception or Ctrl-C discards), or
    call ``commit`` / ``discard``::

        with OutputFiles([manifest, dev], overwrite=True, remove=[test]) as files:
            write(files.stage(manifest)); write(files.stage(dev))

    The commit keeps a hard link to (or moves aside) each file it replaces or removes; if any rename
    fails, the files already placed are taken back and the previous ones restored, so the outputs are
    either all new or all as they were. Files are renamed in the order given: put the one readers look
    for last (a token file's metadata).

    Args:
        finals: the output paths.
        overwrite: existing outputs may be replaced (checked again at commit: another run may have
            written them meanwhile).
        remove: outputs of an earlier run that this one does not write (e.g. a split that is gone); removed
            by the commit, restored if it fails.
    """

    def __init__(
        self, finals: Sequence[str | Path], *, overwrite: bool, remove: Sequence[str | Path] = ()
    ) -> None:
        self.finals = [Path(final) for final in finals]
        self.remove = [Path(item) for item in remove if Path(item) not in self.finals]
        self.overwrite = overwrite
        self._staged: dict[Path, Path] = {}
        self._scratch: list[Path] = []
        self._open = True

    def stage(self, final: str | Path, suffix: str | None = None) -> Path:
        """The temporary file to write ``final``'s content to (created empty, beside ``final``)."""
        final = Path(final)
        if final not in self.finals:
            raise ValueError(f"{final} is not one of this commit's outputs {[str(f) for f in self.finals]}")
        if final not in self._staged:
            with writing_to(final):
                final.parent.mkdir(parents=True, exist_ok=True)
            self._staged[final] = temporary_file(final, suffix or final.suffix or ".tmp")
        return self._staged[final]

    def scratch(self, final: str | Path, suffix: str = ".tmp") -> Path:
        """A temporary beside ``final`` that the commit removes (working data, never renamed into place)."""
        final = Path(final)
        with writing_to(final):
            final.parent.mkdir(parents=True, exist_ok=True)
        path = temporary_file(final, suffix)
        self._scratch.append(path)
        return path

    def commit(self) -> list[Path]:
        """Rename every staged file into place (umask modes), all or none; returns the outputs."""
        if not self._open:
            raise RuntimeError("these output files are already committed or discarded")
        missing = [str(final) for final in self.finals if final not in self._staged]
        try:
            if missing:
                raise ValueError(f"nothing was staged for {missing}")
            umask = _umask()
            for final, temporary in self._staged.items():
                with writing_to(final):
                    os.chmod(temporary, 0o666 & ~umask)  # mkstemp (and writers that replace it) leave 0600
            with signals_deferred():
                if not self.overwrite:  # another process may have written them since the check
                    for final in self.finals:
                        if final.exists():
                            raise FileExistsError(f"{final} already exists; pass --overwrite to replace it")
                self._swap()
                for final in self.finals:  # before a deferred signal can stop the command
                    _mark_written(final)
        finally:
            self._open = False
            self._remove_temporaries()
        return list(self.finals)

    def discard(self) -> None:
        """Remove every temporary; the outputs stay as they were."""
        if self._open:
            self._open = False
            self._remove_temporaries()

    def __enter__(self) -> OutputFiles:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.commit()
            return
        if isinstance(exc, Exception) and not isinstance(exc, OutputError):
            mapped = self._map(exc)
            self.discard()
            if mapped is not None:
                raise mapped from exc
        self.discard()

    def _map(self, exc: Exception) -> OutputError | None:
        """An error of the block: an OS error, or a writer library's error on a full disk, while writing."""
        final = self.finals[0]
        if isinstance(exc, OSError):
            if not concerns_output(exc, *self.finals, *self._staged.values(), *self._scratch):
                return None  # about an input the block read: its own error names it
            return output_error(final, exc)
        if isinstance(exc, RuntimeError) and _free_bytes(final.parent) < _LOW_SPACE:
            return output_error(final, exc)  # torch, libsndfile and safetensors on a full disk
        return None

    def _swap(self) -> None:
        backups: dict[Path, Path] = {}  # output -> its previous content, kept until the commit succeeded
        moved: set[Path] = set()  # outputs moved aside (not linked): absent until restored
        placed: list[Path] = []
        final: Path = self.finals[0]
        try:
            for final in [*self.finals, *self.remove]:  # 1: keep what will be replaced or removed
                if not final.exists() and not final.is_symlink():
                    continue
                if final.is_dir() and not final.is_symlink():
                    raise IsADirectoryError(errno.EISDIR, "is a folder", str(final))
                backup = _temporary_name(final, ".old")
                if final in self.remove:
                    os.replace(final, backup)
                    moved.add(final)
                else:
                    try:
                        os.link(final, backup, follow_symlinks=False)
                    except OSError:  # no hard links here (or an immutable file): move it aside instead
                        os.replace(final, backup)
                        moved.add(final)
                backups[final] = backup
            for final in self.finals:  # 2: the new files, in order
                os.replace(self._staged[final], final)
                placed.append(final)
        except BaseException as exc:
            _rollback(placed, backups, moved)
            if isinstance(exc, OSError):
                raise output_error(final, exc) from exc
            raise
        for backup in backups.values():
            try:
                backup.unlink()
            except OSError:
                pass  # removed by the next run of this output (remove_stale_temporaries)

    def _remove_temporaries(self) -> None:
        for temporary in [*self._staged.values(), *self._scratch]:
            try:
                temporary.unlink(missing_ok=True)
            except OSError:
                log.warning("%s: could not remove this temporary file", temporary)


def _rollback(placed: list[Path], backups: dict[Path, Path], moved: set[Path]) -> None:
    """Undo a partial swap: take back the new files, put the previous ones where they were."""
    for final in placed:
        try:
            if final in backups:
                os.replace(backups.pop(final), final)
            else:
                final.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("%s: could not be restored after a failed commit (%s)", final, exc)
    for final, backup in backups.items():
        try:
            if final in moved:
                os.replace(backup, final)
            else:
                backup.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("%s: could not be restored from %s after a failed commit (%s)", final, backup, exc)


# --------------------------------------------------------------------------------------------------
# A folder replaced as a whole
# --------------------------------------------------------------------------------------------------
@contextmanager
def atomic_folder(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield an empty folder beside ``path``; it replaces ``path`` (if any) only if the block succeeds.

    An exception or Ctrl-C inside the block leaves no partial folder, and an old ``path`` stays until the new
    one is complete; if the swap itself fails, the old one is put back. Call ``check_output(path,
    folder=True, ...)`` before the work: it decides whether an existing ``path`` may be replaced.

    Args:
        path: the output folder.
        overwrite: an existing non-empty ``path`` may be replaced (checked again at the swap: another run
            may have written it meanwhile). An empty folder is always replaced.
    """
    path = Path(path)
    with writing_to(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".partial", dir=path.parent))
    old: Path | None = None
    try:
        try:
            yield staging
        except OutputError as exc:  # name the output, not the staging folder
            text = str(exc).replace(str(staging), str(path))
            raise OutputError(exc.errno or 0, text) from exc
        except OSError as exc:
            if not concerns_output(exc, path, staging):
                raise  # about an input the block read: its own error names it
            raise output_error(path, exc) from exc
        with writing_to(path):
            _default_permissions(staging)
            with signals_deferred():
                if (path.exists() or path.is_symlink()) and not _empty_folder(path):
                    if not overwrite:
                        raise OSError(errno.EEXIST, "exists", str(path))
                    if not path.is_dir() or path.is_symlink():
                        raise FileExistsError(
                            f"{path} exists and is not a folder; the output here is a folder"
                        )
                    old = _temporary_name(path, ".old")
                    os.replace(path, old)
                    try:
                        os.replace(staging, path)
                    except BaseException:
                        os.replace(old, path)
                        old = None
                        raise
                else:
                    os.replace(staging, path)  # also over an empty folder
                _mark_written(path)  # before a deferred signal can stop the command
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)  # what is left is removed by the next run of this output


def _empty_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _default_permissions(folder: Path) -> None:
    """Give ``folder`` and its contents the permissions of ordinary new files (umask applied).

    mkdtemp/mkstemp create private (0700/0600) entries, which would leave a folder others cannot read.
    """
    umask = _umask()
    os.chmod(folder, 0o777 & ~umask)
    for directory, subdirs, files in os.walk(folder):
        for name in subdirs:
            os.chmod(os.path.join(directory, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(directory, name), 0o666 & ~umask)


def interrupted_message(signum: int, command: str) -> str:
    """The one line the CLI prints when a command is stopped by Ctrl-C or SIGTERM."""
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    written, unwritten = outputs_state()
    parts = [f"interrupted ({name}): vqaudio {command} stopped"]
    if unwritten:
        listed = ", ".join(str(path) for path in unwritten)
        parts.append(f"nothing was written to {listed} (what was there before is unchanged)")
    if written:
        parts.append(f"complete: {', '.join(str(path) for path in written)}")
    return "; ".join(parts)
