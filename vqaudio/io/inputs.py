"""What every input file and every utterance id must satisfy, decided in one place.

* Only regular files are opened (``regular_file_problem``): reading a FIFO named ``x.wav`` would block
  forever, and a socket or a device is not data.
* Utterance ids name the rows of token-file indexes and manifests and the WAVs that resynth writes
  (``<out>/<id>.wav``, ``/`` making subfolders), so an id must be a TSV field and a relative file name that
  stays under the output folder (``utterance_id_problem``). Paths stored in TSV files must be TSV fields
  (``tsv_field_problem``). The readers of corpora, ``TokenFileWriter``, ``write_manifest`` and resynth all
  ask these functions, so what tokenize accepts resynth can write.
* Text inputs (manifests, list files, transcripts, token indexes) are read as UTF-8 by ``read_text``, whose
  errors name the file.

The ``*_problem`` functions return what is wrong (None when nothing is), so each caller raises its own error
type with its own context (the manifest and line, the token file).
"""

from __future__ import annotations

import os
import stat
import unicodedata
from pathlib import Path

from vqaudio.errors import VQAudioError

# a component of a resynthesized file name, in UTF-8 bytes: NAME_MAX (255) less room for ".wav"
MAX_ID_PART_BYTES = 250


def regular_file_problem(path: str | Path) -> str | None:
    """None for a regular file (or a symlink to one); else "does not exist", "is a FIFO (named pipe)", ..."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    return "is not a regular file"


def tsv_field_problem(text: str) -> str | None:
    """None when ``text`` can be one field of a UTF-8 TSV line; else why not.

    Refused: tabs, line breaks (also those ``str.splitlines`` splits on: \\v, \\f, \\x1c-\\x1e, \\x85,
    U+2028/2029) and every other control character, and undecodable file-name bytes (surrogate escapes).
    """
    if text.isprintable():  # the common case, at C speed: no Cc, Zl, Zp or Cs character
        return None
    for character in text:
        category = unicodedata.category(character)
        if category in ("Cc", "Zl", "Zp"):
            return f"holds the control character {character!r} (tabs and line breaks would break the TSV row)"
        if category == "Cs":
            return "holds bytes that are not UTF-8 (a file name in another encoding)"
    return None


def utterance_id_problem(utt_id: str) -> str | None:
    """None when ``utt_id`` is usable; else why not.

    A usable id is a non-empty TSV field (``tsv_field_problem``) and a relative path whose ``/``-separated
    parts are neither empty, ``.`` nor ``..`` and at most ``MAX_ID_PART_BYTES`` long: ``<out>/<id>.wav`` then
    stays under ``<out>``.
    """
    if not isinstance(utt_id, str) or not utt_id:
        return "is empty"
    problem = tsv_field_problem(utt_id)
    if problem is not None:
        return problem
    if utt_id.startswith("/"):
        return "is an absolute path (resynth writes <out>/<id>.wav, which must stay under <out>)"
    parts = utt_id.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "has an empty, '.' or '..' part (resynth writes <out>/<id>.wav, which must stay under <out>)"
    if any(len(part.encode("utf-8")) > MAX_ID_PART_BYTES for part in parts):
        return f"has a part longer than {MAX_ID_PART_BYTES} bytes, too long for a file name"
    return None


def read_text(path: str | Path, error: type[VQAudioError], what: str, fix: str = "save it as UTF-8") -> str:
    """The UTF-8 text of a regular file (a leading byte-order mark is dropped).

    Args:
        path: the file.
        error: the exception to raise, e.g. ``DataError`` for a manifest.
        what: what the file is, for the message ("manifest", "token index").
        fix: what to do about a file that is not UTF-8.
    Raises:
        ``error``: not a regular file (a FIFO is never opened), unreadable, or not UTF-8; the message names
            the file and the byte.
    """
    problem = regular_file_problem(path)
    if problem is not None:
        raise error(f"{path}: the {what} {problem}")
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read the {what} ({exc.strerror or exc})") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(
            f"{path}:{line}: the {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); {fix}"
        ) from exc
