"""Writing outputs under faults (issue 24, class "writing output safely"): a failed, full, read-only or
interrupted write leaves the previous output intact and no temporary behind, says so on one line, and every
output needs --overwrite to be replaced.

Faults are simulated by monkeypatching (the tests may run as root, where a read-only chmod does not stop
writes, and cannot mount a small tmpfs): ``os.replace`` / ``os.posix_fallocate`` / ``tempfile.mkstemp``
raising the OSError a full or read-only disk raises, and signals sent to this process from inside the run.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import one_line_error, speech_like

import vqaudio.io.atomic as atomic
from vqaudio.errors import OutputError
from vqaudio.io.atomic import OutputFiles, atomic_folder, atomic_path, check_output, check_writable
from vqaudio.io.token_file import TokenFileWriter, load_tokens, token_paths

HOP = 320
REAL_REPLACE = os.replace


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` (hidden temporaries included) -> its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temporaries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if atomic.TEMP_TAG in p.name)


def write_tokens(path: Path, seed: int, overwrite: bool = False, count: int = 3) -> None:
    rng = np.random.default_rng(seed)
    with TokenFileWriter(
        path,
        num_codebooks=2,
        codebook_size=16,
        sample_rate=16000,
        hop_length=HOP,
        model_name="unit",
        model_hash="abc",
        overwrite=overwrite,
    ) as writer:
        for index in range(count):
            frames = int(rng.integers(1, 30))
            writer.add(f"u{index}", f"/a/u{index}.wav", rng.integers(0, 16, (2, frames)), frames * HOP)


def fail_replace_onto(monkeypatch: pytest.MonkeyPatch, name: str, code: int = errno.EPERM) -> None:
    """``os.replace(anything, .../name)`` raises OSError(code); other renames work."""

    def replace(source: Any, target: Any) -> None:
        if Path(target).name == name:
            raise OSError(code, os.strerror(code), str(target))
        REAL_REPLACE(source, target)

    monkeypatch.setattr(atomic.os, "replace", replace)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


# --------------------------------------------------------------------------------------------------
# DL1: a failed commit restores the previous token file (all three files)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("failing", ["out.index.tsv", "out.meta.json"])
def test_dl1_failed_rename_in_the_commit_keeps_the_previous_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    out = tmp_path / "out.npy"
    write_tokens(out, seed=1)
    before = snapshot(tmp_path)
    fail_replace_onto(monkeypatch, failing)  # e.g. `chattr +i out.index.tsv`
    with pytest.raises(OutputError, match=rf"cannot write .*{failing}: operation not permitted"):
        write_tokens(out, seed=2, overwrite=True)
    assert snapshot(tmp_path) == before  # all three previous files, byte for byte; no temporary
    assert len(load_tokens(out)) == 3


def test_dl1_token_file_that_cannot_even_be_linked_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An immutable index refuses hard links and renames: nothing is replaced, nothing is lost."""
    out = tmp_path / "out.npy"
    write_tokens(out, seed=1)
    before = snapshot(tmp_path)

    def no_link(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    def replace(source: Any, target: Any) -> None:
        if Path(source).name == "out.index.tsv":
            raise OSError(errno.EPERM, "Operation not permitted")
        REAL_REPLACE(source, target)

    monkeypatch.setattr(atomic.os, "link", no_link)
    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OutputError, match="out.index.tsv"):
        write_tokens(out, seed=2, overwrite=True)
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------------------
# DL2: prior sample needs --overwrite and replaces the folder as a whole
# --------------------------------------------------------------------------------------------------
def fake_prior() -> Any:
    tokens = {"tokenizer_name": "tiny", "sample_rate": 16000, "hop_length": 320, "pitch_rows": 0}
    return SimpleNamespace(
        codebook_size=16, path=None, tokenizer_hash="abc", frame_rate=50.0, num_codebooks=2, tokens=tokens
    )


def test_dl2_prior_samples_need_overwrite_and_leave_no_stale_file(tmp_path: Path, run: Any) -> None:
    from vqaudio.prior.audio_io import write_samples

    out = tmp_path / "samples"
    write_samples(out, torch.zeros(3, 2, 5, dtype=torch.long), fake_prior(), None, {"seed": 1})
    before = snapshot(out)
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_samples(out, torch.ones(1, 2, 5, dtype=torch.long), fake_prior(), None, {"seed": 2})
    assert snapshot(out) == before
    # refused by the CLI before the prior is even loaded (a missing prior would be the other error)
    one_line_error(
        run("prior", "sample", out, "--prior", tmp_path / "missing", "--tokens-only"), "--overwrite"
    )
    assert snapshot(out) == before

    write_samples(out, torch.ones(1, 2, 5, dtype=torch.long), fake_prior(), None, {"seed": 2}, overwrite=True)
    # one token file of one sample: sample_001/002 of the old run are gone
    assert sorted(snapshot(out)) == ["samples.index.tsv", "samples.json", "samples.meta.json", "samples.npy"]
    assert json.loads((out / "samples.json").read_text())["ids"] == ["sample_000"]
    assert list(load_tokens(out / "samples.npy")) == ["sample_000"]


def test_dl2_a_folder_with_other_files_is_never_replaced(tmp_path: Path) -> None:
    from vqaudio.prior.audio_io import write_samples

    out = tmp_path / "samples"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="notes.txt.*does not write"):
        write_samples(out, torch.ones(1, 2, 5, dtype=torch.long), fake_prior(), None, {}, overwrite=True)
    assert snapshot(out) == {"notes.txt": b"mine"}


# --------------------------------------------------------------------------------------------------
# DL3: prepare needs --overwrite; manifests are replaced together
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    for index in range(3):
        sf.write(root / f"u{index}.wav", speech_like(1600, seed=index), 16000, subtype="PCM_16")
    return root


@pytest.mark.parametrize("existing", ["m.tsv", "m.dev.tsv"])
def test_dl3_prepare_refuses_to_replace_a_manifest_or_a_split_without_overwrite(
    tmp_path: Path, small_corpus: Path, run: Any, existing: str
) -> None:
    (tmp_path / existing).write_text("old\n")
    one_line_error(
        run("prepare", small_corpus, tmp_path / "m.tsv", "--dev", "0", "--test", "0"), existing, "--overwrite"
    )
    assert (tmp_path / existing).read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.glob("*.tsv")) == [existing]


def test_dl3_prepare_overwrite_removes_the_splits_of_an_earlier_run(
    tmp_path: Path, small_corpus: Path, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = tmp_path / "m.tsv"
    for name in ("m.tsv", "m.train.tsv", "m.dev.tsv", "m.test.tsv"):
        (tmp_path / name).write_text(f"old {name}\n")
    before = snapshot(tmp_path)
    fail_replace_onto(monkeypatch, "m.tsv")  # the commit fails: every old manifest stays
    one_line_error(
        run("prepare", small_corpus, manifest, "--dev", "0", "--test", "0", "--overwrite"), "m.tsv"
    )
    assert snapshot(tmp_path) == before
    monkeypatch.setattr(atomic.os, "replace", REAL_REPLACE)
    assert run("prepare", small_corpus, manifest, "--dev", "0", "--test", "0", "--overwrite")[0] == 0
    assert sorted(p.name for p in tmp_path.glob("*.tsv")) == ["m.tsv"]  # no split of the old run left
    assert len(manifest.read_text().splitlines()) == 2 + 3


# --------------------------------------------------------------------------------------------------
# DL4 / SW7: folders of WAVs are staged and swapped; the old folder survives an interruption
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def tokenized(run: Any, audio_folder: Path, tiny_model_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "tokens" / "out.npy"
    code, _, err = run("tokenize", audio_folder, out, "--model", tiny_model_dir, "--no-progress")
    assert code == 0, err
    return out


def interrupt_on_call(monkeypatch: pytest.MonkeyPatch, target: str, signum: int, after: int = 2) -> None:
    """The ``after``-th call of ``target`` (a "module:function" path) sends ``signum`` to this process."""
    module_name, name = target.split(":")
    module = sys.modules[module_name]
    original = getattr(module, name)
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == after:
            signal.raise_signal(signum)  # in this thread, now
            time.sleep(1)  # the handler raises here
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_dl4_sw6_um8_interrupted_resynth_overwrite_keeps_the_old_folder(
    run: Any,
    tiny_model_dir: Path,
    tmp_path: Path,
    tokenized: Path,
    monkeypatch: pytest.MonkeyPatch,
    signum: int,
) -> None:
    decoded = tmp_path / "decoded"
    decoded.mkdir()
    for name in ("a.wav", "b.wav", "old_only.wav"):
        (decoded / name).write_bytes(b"old " + name.encode())
    before = snapshot(tmp_path)
    interrupt_on_call(monkeypatch, "vqaudio.codec.corpus_coding:save_audio", signum, after=2)
    line = one_line_error(
        run("resynth", tokenized, decoded, "--model", tiny_model_dir, "--overwrite", "--no-progress"),
        "interrupted",
        str(decoded),
        "nothing was written",
        code=128 + signum,
    )
    assert ("Ctrl-C" if signum == signal.SIGINT else "SIGTERM") in line
    assert snapshot(tmp_path) == before  # the old WAVs, no mix, no staging folder

    monkeypatch.undo()
    assert run("resynth", tokenized, decoded, "--model", tiny_model_dir, "--overwrite")[0] == 0
    wavs = sorted(str(p.relative_to(decoded)) for p in decoded.rglob("*.wav"))
    assert "old_only.wav" not in wavs and len(wavs) == 6  # replaced as a whole
    assert sf.info(decoded / "a.wav").samplerate == 16000


def test_dl4_resynth_overwrite_refuses_a_folder_holding_other_files(
    run: Any, tiny_model_dir: Path, tmp_path: Path, tokenized: Path
) -> None:
    decoded = tmp_path / "decoded"
    decoded.mkdir()
    (decoded / "README.md").write_text("keep me")
    one_line_error(
        run("resynth", tokenized, decoded, "--model", tiny_model_dir, "--overwrite"),
        "README.md",
        "does not write",
    )
    assert snapshot(decoded) == {"README.md": b"keep me"}


def test_sw7_demo_out_reused_keeps_no_old_wav(
    run: Any, tiny_model_dir: Path, tmp_path: Path, audio_folder: Path
) -> None:
    out = tmp_path / "demo"
    assert run("demo", audio_folder, "--out", out, "--model", tiny_model_dir)[0] == 0
    assert len(list((out / "resynth").rglob("*.wav"))) == 6
    one_line_error(
        run("demo", audio_folder / "a.wav", "--out", out, "--model", tiny_model_dir), "--overwrite"
    )
    code, stdout, err = run(
        "demo", audio_folder / "a.wav", "--out", out, "--model", tiny_model_dir, "--overwrite"
    )
    assert code == 0, err
    assert sorted(p.name for p in (out / "resynth").rglob("*.wav")) == ["a.wav"]
    assert len(load_tokens(out / "tokens.npy")) == 1 and temporaries(tmp_path) == []
    assert f"-> {out / 'tokens.npy'}" in stdout  # the final path, not the staging folder's


# --------------------------------------------------------------------------------------------------
# CR1: a full disk during the commit: one line, no temporaries, no SIGBUS
# --------------------------------------------------------------------------------------------------
def test_cr1_full_disk_during_the_token_commit(
    run: Any, audio_folder: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "full" / "y.npy"
    out.parent.mkdir()

    def no_space(handle: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    one_line_error(run("tokenize", audio_folder, out, "--model", tiny_model_dir), str(out), "no space left")
    assert snapshot(out.parent) == {}  # no hidden .raw or .npy temporary


def test_cr1_full_disk_while_streaming_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "y.npy"
    with pytest.raises(OutputError, match="y.npy: no space left"):
        with TokenFileWriter(
            out,
            num_codebooks=2,
            codebook_size=16,
            sample_rate=16000,
            hop_length=HOP,
            model_name="u",
            model_hash="h",
        ) as writer:
            writer._raw.close()
            writer._raw = FullDisk()  # type: ignore[assignment]
            writer.add("u", "/a/u.wav", np.zeros((2, 3), dtype=np.int64), 3 * HOP)
    assert snapshot(tmp_path) == {}


# --------------------------------------------------------------------------------------------------
# CR9: OS errors of writing are one line naming the output, checked before the work where possible
# --------------------------------------------------------------------------------------------------
class FullDisk:
    """A file on a full disk."""

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        pass


def read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Creating a file in ``folder`` fails as on a read-only mount (chmod does not stop root)."""
    original = atomic.tempfile.mkstemp

    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        if Path(kwargs.get("dir", "")).resolve() == folder.resolve():
            raise OSError(errno.EROFS, "Read-only file system")
        return original(*args, **kwargs)

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)


def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from vqaudio.codec.tokenizer import Tokenizer

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(Tokenizer, "load", refuse)


def test_cr9_read_only_output_is_refused_before_the_work(
    run: Any, audio_folder: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    read_only(monkeypatch, folder)
    no_model_load(monkeypatch)
    one_line_error(
        run("tokenize", audio_folder, folder / "t.npy", "--model", tiny_model_dir), "ro", "read-only"
    )
    one_line_error(
        run("resynth", audio_folder / "a.wav", folder / "rt.wav", "--model", tiny_model_dir),
        "rt.wav",
        "read-only",
    )
    one_line_error(run("prepare", audio_folder, folder / "m.tsv"), "m.tsv", "read-only")
    one_line_error(run("demo", "--out", folder / "demo", "--model", tiny_model_dir), "demo", "read-only")
    assert snapshot(folder) == {}


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_cr9_unwritable_folder_by_permissions(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            check_output(folder / "t.npy", overwrite=False)
    finally:
        folder.chmod(0o700)


def test_cr9_read_only_training_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vqaudio.training.run import RunFolder

    out = tmp_path / "run"
    out.mkdir()
    read_only(monkeypatch, out)
    with pytest.raises(OutputError, match="run: the file system is read-only"):
        RunFolder(out, ["checkpoint.pt"], "{out}").open(resume=True, overwrite=False)


def test_cr9_full_disk_writing_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.save into a path reports a full disk as "enforce fail at inline_container.cc"; through a Python
    file it is ENOSPC, and the writer names the checkpoint."""
    from vqaudio.training import checkpoint

    def full(obj: Any, handle: Any) -> None:
        assert not isinstance(handle, (str, Path)), "torch.save must write through a Python file"
        handle.write(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    state = {key: {} for key in checkpoint.CHECKPOINT_KEYS[3:]}
    with pytest.raises(OutputError, match="checkpoint.pt: no space left"):
        checkpoint.save_checkpoint(tmp_path / "checkpoint.pt", state)
    assert snapshot(tmp_path) == {}


def test_cr9_writer_library_failing_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """libsndfile says "System error.", torch "enforce fail": with no space left, the message says so."""
    monkeypatch.setattr(atomic, "_free_bytes", lambda folder: 0)
    with pytest.raises(OutputError, match=r"a\.wav: no space left"):
        with atomic_path(tmp_path / "a.wav") as tmp:
            tmp.write_bytes(b"RIFF")
            raise sf.LibsndfileError(2, "Error opening 'a.wav': ")
    assert snapshot(tmp_path) == {}


def test_cr9_full_disk_in_resynth(
    run: Any, tiny_model_dir: Path, tmp_path: Path, tokenized: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def write(path: Any, *args: Any, **kwargs: Any) -> None:
        Path(path).write_bytes(b"RIFF")
        raise sf.LibsndfileError(2, f"Error opening {path!r}: ")

    monkeypatch.setattr(atomic, "_free_bytes", lambda folder: 0)
    monkeypatch.setattr("vqaudio.io.audio.sf.write", write)
    decoded = tmp_path / "decoded"
    line = one_line_error(run("resynth", tokenized, decoded, "--model", tiny_model_dir), "no space left")
    assert str(decoded) in line and atomic.TEMP_TAG not in line
    assert not decoded.exists() and temporaries(tmp_path) == []


def test_cr9_concurrent_resynth_loser_gets_one_line(
    run: Any, tiny_model_dir: Path, tmp_path: Path, tokenized: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another run creates the folder while this one decodes: this one must not replace it."""
    from vqaudio.codec import corpus_coding

    decoded = tmp_path / "decoded"
    original = corpus_coding.save_audio

    def other_run_finishes_first(path: Path, *args: Any, **kwargs: Any) -> None:
        if not decoded.exists():
            decoded.mkdir()
            (decoded / "a.wav").write_bytes(b"the other run's")
        original(path, *args, **kwargs)

    monkeypatch.setattr(corpus_coding, "save_audio", other_run_finishes_first)
    one_line_error(
        run("resynth", tokenized, decoded, "--model", tiny_model_dir), str(decoded), "appeared while"
    )
    assert snapshot(decoded) == {"a.wav": b"the other run's"} and temporaries(tmp_path) == []


@pytest.mark.parametrize("folder_name", ["t.npy", "t.index.tsv"])
def test_cr9_token_file_onto_a_folder_fails_before_the_work(
    run: Any,
    audio_folder: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    folder_name: str,
) -> None:
    (tmp_path / folder_name).mkdir()
    no_model_load(monkeypatch)
    one_line_error(
        run("tokenize", audio_folder, tmp_path / "t.npy", "--model", tiny_model_dir, "--overwrite"),
        folder_name,
        "is a folder",
    )


def test_cr9_output_folder_that_is_a_file_or_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        check_writable(tmp_path / "file" / "sub")
    with pytest.raises(FileExistsError, match="not a folder"):
        check_output(tmp_path / "file", overwrite=True, folder=True)


# --------------------------------------------------------------------------------------------------
# SW5: outputs honour the umask
# --------------------------------------------------------------------------------------------------
def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sw5_token_files_and_folders_honour_the_umask(
    umask_022: None, run: Any, tiny_model_dir: Path, tmp_path: Path, audio_folder: Path
) -> None:
    out = tmp_path / "t.npy"
    assert run("tokenize", audio_folder, out, "--model", tiny_model_dir)[0] == 0
    assert [mode(path) for path in token_paths(out)] == [0o644] * 3
    decoded = tmp_path / "decoded"
    assert run("resynth", out, decoded, "--model", tiny_model_dir)[0] == 0
    assert mode(decoded) == 0o755 and mode(decoded / "sub") == 0o755 and mode(decoded / "a.wav") == 0o644
    manifest = tmp_path / "m.tsv"
    assert run("prepare", audio_folder, manifest, "--dev", "0", "--test", "0")[0] == 0
    assert mode(manifest) == 0o644


# --------------------------------------------------------------------------------------------------
# SW6 / UM8: SIGINT and SIGTERM clean up the same way and say so; leftovers of kill -9 are removed
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sw6_um8_interrupted_tokenize_leaves_the_previous_file_and_says_so(
    run: Any,
    audio_folder: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    signum: int,
) -> None:
    out = tmp_path / "t.npy"
    write_tokens(out, seed=1)
    before = snapshot(tmp_path)
    handler = signal.getsignal(signal.SIGTERM)
    interrupt_on_call(monkeypatch, "vqaudio.codec.corpus_coding:load_audio", signum, after=3)
    line = one_line_error(
        run("tokenize", audio_folder, out, "--model", tiny_model_dir, "--overwrite"),
        "vqaudio tokenize stopped",
        f"nothing was written to {out}",
        code=128 + signum,
    )
    assert line.startswith("interrupted (")
    assert snapshot(tmp_path) == before  # no .raw / staging temporary, the old token file as it was
    assert signal.getsignal(signal.SIGTERM) is handler  # main() puts the previous handlers back


def test_sw6_commit_is_not_cut_by_a_signal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal during the renames waits until the three files are in place."""
    out = tmp_path / "out.npy"
    write_tokens(out, seed=1)
    calls = [0]

    def replace(source: Any, target: Any) -> None:
        calls[0] += 1
        if calls[0] == 1:
            signal.raise_signal(signal.SIGINT)  # in this thread, now (os.kill may land in a torch thread)
        REAL_REPLACE(source, target)

    monkeypatch.setattr(atomic.os, "replace", replace)
    # Python's own Ctrl-C handler, whatever an earlier test or library in this process left installed
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            write_tokens(out, seed=2, overwrite=True, count=4)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(load_tokens(out)) == 4 and temporaries(tmp_path) == []  # complete and consistent


def test_sw6_um8_a_signal_during_the_commit_reports_the_complete_output(
    run: Any, audio_folder: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "t.npy"

    def replace(source: Any, target: Any) -> None:
        if Path(target) == out:
            signal.raise_signal(signal.SIGTERM)  # in this thread, now
        REAL_REPLACE(source, target)

    monkeypatch.setattr(atomic.os, "replace", replace)
    line = one_line_error(run("tokenize", audio_folder, out, "--model", tiny_model_dir), code=143)
    assert f"complete: {out}" in line and "nothing was written" not in line
    assert len(load_tokens(out)) == 6 and temporaries(tmp_path) == []


def test_sw6_stale_checkpoint_temporary_is_removed_when_a_run_starts(tmp_path: Path) -> None:
    from vqaudio.training.run import RunFolder

    out = tmp_path / "run"
    out.mkdir()
    stale = out / f".checkpoint.pt.vqtmp-{dead_pid()}-{atomic._HOST}-abcd1234.pt"
    stale.write_bytes(b"half a checkpoint")
    assert RunFolder(out, ["checkpoint.pt"], "{out}").open(resume=True, overwrite=False) is None
    assert not stale.exists()


def test_sw6_stale_temporaries_of_a_killed_run_are_removed_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out.npy"
    dead, host = dead_pid(), atomic._HOST
    stale = [
        tmp_path / f".out.npy.vqtmp-{dead}-{host}-abcd1234.raw",
        tmp_path / f".out.index.tsv.vqtmp-{dead}-{host}-abcd1234.tsv",
    ]
    for path in stale:
        path.write_bytes(b"stale")
    (tmp_path / f".decoded.vqtmp-{dead}-{host}-abcd1234.partial").mkdir()
    (tmp_path / f".decoded.vqtmp-{dead}-{host}-abcd1234.partial" / "a.wav").write_bytes(b"stale")
    alive = tmp_path / f".out.npy.vqtmp-{os.getppid()}-{host}-abcd1234.raw"  # a run still going
    alive.write_bytes(b"live")
    other = tmp_path / ".out.npy.vqtmp-1-otherhost-abcd1234.raw"  # we cannot tell: kept
    other.write_bytes(b"?")
    write_tokens(out, seed=1)
    assert not any(path.exists() for path in stale) and alive.exists() and other.exists()
    assert "removed 1 temporary of" in caplog.text and "interrupted earlier run" in caplog.text
    check_output(tmp_path / "decoded", overwrite=False, folder=True)
    assert sorted(p.name for p in tmp_path.iterdir() if "decoded" in p.name) == []


@pytest.mark.slow
def test_sw6_sigterm_to_a_real_process(tmp_path: Path, audio_folder: Path, tiny_model_dir: Path) -> None:
    """The console script itself: SIGTERM -> exit 143, one line, nothing left (not only under pytest)."""
    out = tmp_path / "t.npy"
    script = (
        "import sys, time\n"
        "import vqaudio.codec.corpus_coding as cc\n"
        "original = cc.load_audio\n"
        "def slow(*a, **k):\n"
        "    print('ready', flush=True); time.sleep(30); return original(*a, **k)\n"
        "cc.load_audio = slow\n"
        "from vqaudio.cli.main import main\n"
        f"sys.exit(main(['tokenize', {str(audio_folder)!r}, {str(out)!r}, '--model', {str(tiny_model_dir)!r}]))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("interrupted (SIGTERM): vqaudio tokenize stopped")
    assert list(tmp_path.glob("*t.npy*")) == [] and list(tmp_path.glob(".t.*")) == []


# --------------------------------------------------------------------------------------------------
# The writer layer itself
# --------------------------------------------------------------------------------------------------
def test_atomic_folder_swap_failure_puts_the_old_folder_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.wav").write_bytes(b"old")

    def replace(source: Any, target: Any) -> None:
        if Path(source).name.endswith(".partial"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        REAL_REPLACE(source, target)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OutputError, match=r"cannot write .*out: Invalid cross-device link"):
        with atomic_folder(out) as staging:
            (staging / "new.wav").write_bytes(b"new")
    assert snapshot(tmp_path) == {"out/old.wav": b"old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_output_files_commit_is_all_or_nothing_and_can_remove(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, gone = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "gone.txt"
    for path in (a, b, gone):
        path.write_text("old")
    fail_replace_onto(monkeypatch, "b.txt", errno.ENOSPC)
    with pytest.raises(OutputError, match="b.txt: no space left"):
        with OutputFiles([a, b], overwrite=True, remove=[gone]) as files:
            files.stage(a).write_text("new")
            files.stage(b).write_text("new")
    assert snapshot(tmp_path) == {"a.txt": b"old", "b.txt": b"old", "gone.txt": b"old"}
    monkeypatch.setattr(atomic.os, "replace", REAL_REPLACE)
    with OutputFiles([a, b], overwrite=True, remove=[gone]) as files:
        files.stage(a).write_text("new")
        files.stage(b).write_text("new")
    assert snapshot(tmp_path) == {"a.txt": b"new", "b.txt": b"new"}
