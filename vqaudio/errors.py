"""User-facing errors: the CLI prints their message on one line and exits 1 (no traceback).

Every error the user can cause and fix (a file, a recipe, a model, an option or argument value) is a
``VQAudioError``; the CLI reports any other exception as a bug in vqaudio (``vqaudio.cli.main``).
"""

from __future__ import annotations


class VQAudioError(Exception):
    """Base class: a problem with the user's input or files, not a bug."""


class InputError(VQAudioError, ValueError):
    """A value given to vqaudio that it cannot use: an option, a function or constructor argument, a recipe
    field out of range, or one that does not fit the model or data it is used with (``n_q`` above the model's
    codebooks, a speaker the prior does not know). The message says what was received, what was expected and
    the fix.

    Also a ValueError, so code that catches ValueError for a bad argument keeps working.
    """


SKIP_BAD_HINT = "or pass --skip-bad"


class AudioError(VQAudioError):
    """An audio file that cannot be used: unreadable, empty, NaN/Inf samples, an implausible rate or length.

    Args:
        message: what is wrong, naming the file.
        fix: what the user can do; the full message then ends "; <fix>, or pass --skip-bad".
    ``reason`` is the message without the fix: what a warning says when the file *is* skipped (--skip-bad).
    """

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.reason = message
        self.fix = fix
        super().__init__(message if fix is None else f"{message}; {fix}, {SKIP_BAD_HINT}")

    def without_skip_hint(self) -> AudioError:
        """The same error for a command that reads one file (and has no --skip-bad)."""
        return AudioError(self.reason if self.fix is None else f"{self.reason}; {self.fix}")


class TokenFileError(VQAudioError):
    """A token file (.npy + index + metadata) that is missing, malformed or from another model."""


class ModelFileError(VQAudioError):
    """A model folder/file that is missing, corrupt, or fails its hash check."""


class CompressedFileError(VQAudioError):
    """A compressed file (.vqa) that is not one, is damaged (naming the block), or needs another model."""


class DataError(VQAudioError):
    """A corpus, manifest or split that cannot be used."""


class OutputError(VQAudioError, OSError):
    """An output that cannot be written: a full disk, a read-only or forbidden folder, a folder in the way.

    Also an OSError (``errno`` and ``filename`` set), so code catching OS errors still catches it; the message
    names the output (not a temporary) and the fix.
    """

    def __str__(self) -> str:
        return str(self.strerror) if self.strerror else super().__str__()
