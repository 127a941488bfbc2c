"""User-facing errors: the CLI prints their message on one line and exits 1 (no traceback)."""


class VQAudioError(Exception):
    """Base class: a problem with the user's input or files, not a bug."""


class AudioError(VQAudioError):
    """An audio file that cannot be read, is empty, or holds NaN/Inf samples."""


class TokenFileError(VQAudioError):
    """A token file (.npy + index + metadata) that is missing, malformed or from another model."""


class ModelFileError(VQAudioError):
    """A model folder/file that is missing, corrupt, or fails its hash check."""


class DataError(VQAudioError):
    """A corpus, manifest or split that cannot be used."""


class OutputError(VQAudioError, OSError):
    """An output that cannot be written: a full disk, a read-only or forbidden folder, a folder in the way.

    Also an OSError (``errno`` and ``filename`` set), so code catching OS errors still catches it; the message
    names the output (not a temporary) and the fix.
    """

    def __str__(self) -> str:
        return str(self.strerror) if self.strerror else super().__str__()
