"""``vqaudio tokenize / resynth / info`` end to end; every bad input: exit 1, one line, nothing written."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import RunResult, one_line_error, speech_like

from vqaudio.cli.main import main
from vqaudio.codec.corpus_coding import resynthesize_tokens
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.io.audio import load_audio
from vqaudio.io.token_file import load_tokens, token_paths


def files_below(folder: Path) -> list[str]:
    """Every file and folder below ``folder`` (hidden temporaries included)."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) if folder.exists() else []


@pytest.fixture
def tokenized(
    run: Callable[..., RunResult], audio_folder: Path, tiny_model_dir: Path, tmp_path: Path
) -> Path:
    """``audio_folder`` tokenized with the tiny model: the path of the .npy."""
    out = tmp_path / "tokens" / "out.npy"
    code, _, err = run("tokenize", audio_folder, out, "--model", tiny_model_dir)
    assert code == 0, err
    return out


# --------------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------------
def test_tokenize_index_load_resynth_end_to_end(
    run: Callable[..., RunResult], audio_folder: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tokens" / "out.npy"
    code, stdout, err = run("tokenize", audio_folder, out, "--model", tiny_model_dir, "--batch-size", "4")
    assert code == 0, err
    assert "tokenized 6 utterances" in stdout and str(out) in stdout and "0.60 kbps" in stdout
    assert files_below(out.parent) == ["out.index.tsv", "out.meta.json", "out.npy"]

    tok = Tokenizer.load(tiny_model_dir)
    corpus = load_tokens(out)
    assert list(corpus) == ["a", "b", "c", "sub/d", "sub/deeper/f", "sub/e"]
    assert corpus.meta["model_hash"] == tok.hash and corpus.meta["n_q"] == 3
    assert corpus.meta["num_utterances"] == 6 and corpus.meta["skipped"] == []
    differ = total = 0
    for entry in corpus.entries:
        wav = load_audio(entry.path, 16000)  # resampled / downmixed the same way
        assert entry.num_samples == len(wav)
        assert entry.num_frames == math.ceil(len(wav) / 320)
        expected = tok.encode(wav, 16000)
        differ += int((torch.from_numpy(np.array(corpus[entry.utt_id])).long() != expected).any(0).sum())
        total += entry.num_frames
    assert differ <= 0.001 * total

    decoded = tmp_path / "decoded"
    code, stdout, err = run("resynth", out, decoded, "--model", tiny_model_dir)
    assert code == 0, err
    assert files_below(decoded) == [
        "a.wav", "b.wav", "c.wav", "sub", "sub/d.wav", "sub/deeper", "sub/deeper/f.wav", "sub/e.wav"
    ]  # fmt: skip
    for entry in corpus.entries:
        audio, rate = sf.read(decoded / f"{entry.utt_id}.wav", dtype="float32")
        assert rate == 16000 and len(audio) == entry.num_samples
        codes = torch.from_numpy(np.array(corpus[entry.utt_id])).long()
        reference = tok.decode(codes, num_samples=entry.num_samples).clamp(-1, 1).numpy()
        np.testing.assert_allclose(audio, reference, atol=2 / 32768)


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal, so tqdm draws its bars."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("command", ["tokenize", "resynth"])
def test_progress_bars_on_a_terminal_unless_no_progress(
    command: str,
    audio_folder: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    tokenized: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = audio_folder if command == "tokenize" else tokenized
    label = "tokenizing" if command == "tokenize" else "decoding"
    for flags, expect_bar in ([], True), (["--no-progress"], False):
        stderr = _Terminal()
        monkeypatch.setattr(sys, "stderr", stderr)
        out = tmp_path / f"{command}{len(flags)}" / ("t.npy" if command == "tokenize" else "wavs")
        assert main([command, str(source), str(out), "--model", str(tiny_model_dir), *flags]) == 0
        assert (label in stderr.getvalue()) == expect_bar, (flags, stderr.getvalue())


def test_tokens_do_not_depend_on_batch_size_or_chunking(
    run: Callable[..., RunResult], tiny_model_dir: Path, tmp_path: Path, write_audio: Callable[..., Path]
) -> None:
    folder = tmp_path / "many"
    for index in range(16):
        write_audio(folder / f"u{index:02d}.wav", speech_like(8000 + 3001 * index, seed=20 + index))
    arrays = []
    for name, options in [
        ("one", ["--batch-size", "1"]),
        ("many", ["--batch-size", "16", "--chunk-seconds", "1"]),
    ]:
        out = tmp_path / f"{name}.npy"
        code, _, err = run("tokenize", folder, out, "--model", tiny_model_dir, *options)
        assert code == 0, err
        arrays.append(np.load(out))
    assert arrays[0].shape == arrays[1].shape and len(arrays[0]) > 1000
    assert (arrays[0] != arrays[1]).any(axis=1).sum() <= 0.001 * len(arrays[0])


def test_shards_merge_into_the_full_corpus(
    run: Callable[..., RunResult], audio_folder: Path, tiny_model_dir: Path, tmp_path: Path, tokenized: Path
) -> None:
    for index in (1, 2):
        code, _, err = run(
            "tokenize",
            audio_folder,
            tmp_path / f"shard{index}.npy",
            "--model",
            tiny_model_dir,
            "--shard",
            f"{index}/2",
        )
        assert code == 0, err
    assert list(load_tokens(tmp_path / "shard1.npy")) == ["a", "c", "sub/deeper/f"]  # every 2nd sorted id
    merged, full = load_tokens(str(tmp_path / "shard*.npy")), load_tokens(tokenized)
    assert list(merged) == list(full)
    for utt_id in full:
        np.testing.assert_array_equal(merged[utt_id], full[utt_id])
    code, _, err = run(
        "tokenize", audio_folder, tmp_path / "x.npy", "--model", tiny_model_dir, "--shard", "0/2"
    )
    assert code == 2 and "--shard" in err


def test_fewer_codebooks_tokenize_and_resynth(
    run: Callable[..., RunResult], audio_folder: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "n2.npy"
    code, stdout, err = run("tokenize", audio_folder, out, "--model", tiny_model_dir, "--n-q", "2")
    assert code == 0, err
    assert "n_q=2" in stdout and "0.40 kbps" in stdout
    corpus = load_tokens(out)
    assert corpus.array.shape[1] == 2 and corpus.meta["n_q"] == 2 and corpus.meta["model_num_codebooks"] == 3
    code, _, err = run("resynth", out, tmp_path / "dec", "--model", tiny_model_dir, "--n-q", "1")
    assert code == 0, err
    assert len(list((tmp_path / "dec").rglob("*.wav"))) == 6


def test_audio_round_trip(
    run: Callable[..., RunResult], audio_folder: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    source = audio_folder / "c.wav"  # 22.05 kHz: the output is at the model rate
    out = tmp_path / "rt.wav"
    code, stdout, err = run("resynth", source, out, "--model", tiny_model_dir, "--n-q", "2")
    assert code == 0, err
    audio, rate = sf.read(out)
    assert rate == 16000 and len(audio) == len(load_audio(source, 16000))
    assert "2 codebooks" in stdout
    one_line_error(run("resynth", source, out, "--model", tiny_model_dir), "rt.wav", "--overwrite")
    assert run("resynth", source, out, "--model", tiny_model_dir, "--overwrite")[0] == 0


def test_info_on_model_and_token_file(
    run: Callable[..., RunResult], tiny_model_dir: Path, tokenized: Path
) -> None:
    code, stdout, _ = run("info", tiny_model_dir)
    assert code == 0
    for needle in (
        "tokenizer 'tiny'",
        "16000 Hz",
        "hop 320",
        "frame rate 50 Hz",
        "3 x 16",
        "1: 0.20, 2: 0.40, 3: 0.60",
    ):
        assert needle in stdout
    assert "parameters" in stdout and "steps: 0" in stdout
    code, stdout, _ = run("info", tiny_model_dir, "--json")
    facts = json.loads(stdout)
    assert facts["kind"] == "tokenizer" and facts["bitrate"] == {"1": 200.0, "2": 400.0, "3": 600.0}
    assert facts["training"]["seed"] == 0 and facts["num_parameters"] > 0 and len(facts["hash"]) == 64
    code, stdout, _ = run("info", tokenized)
    assert code == 0 and "6 utterances" in stdout and "model 'tiny'" in stdout
    facts = json.loads(run("info", tokenized, "--json")[1])
    assert facts["kind"] == "tokens" and facts["num_utterances"] == 6 and facts["n_q"] == 3
    assert "codebook_usage" not in facts  # counting reads the whole file: only on request
    # --usage: each codebook's share of used codes and perplexity, as counted straight from the array
    codes = np.load(tokenized).astype(np.int64)  # [frames, n_q]
    usage = json.loads(run("info", tokenized, "--usage", "--json")[1])["codebook_usage"]
    assert len(usage) == 3
    for column, stats in enumerate(usage):
        probabilities = np.bincount(codes[:, column], minlength=16) / len(codes)
        seen = probabilities[probabilities > 0]
        assert stats["used_fraction"] == pytest.approx(len(seen) / 16)
        assert stats["perplexity"] == pytest.approx(2 ** -(seen * np.log2(seen)).sum())
    code, stdout, _ = run("info", tokenized, "--usage")
    assert code == 0 and "perplexity" in stdout and len(stdout.splitlines()) == 5 + 1 + 3
    one_line_error(run("info", tiny_model_dir, "--usage"), "--usage")
    one_line_error(run("info", tokenized.parent / "nothing"), "nothing")


def test_console_script(audio_folder: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    """The installed ``vqaudio`` entry point runs a whole tokenize (in-process tests cover errors)."""
    script = Path(sys.executable).with_name("vqaudio")
    if not script.exists():
        pytest.skip("the vqaudio console script is not installed next to this Python")
    (audio_folder / "zz_broken.wav").write_text("not audio")
    out = tmp_path / "out.npy"
    done = subprocess.run(
        [
            str(script),
            "-q",
            "tokenize",
            str(audio_folder),
            str(out),
            "--model",
            str(tiny_model_dir),
            "--skip-bad",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "tokenized 6 utterances" in done.stdout and "1 skipped" in done.stdout
    assert "zz_broken.wav" in done.stderr  # the skip is reported
    assert list(load_tokens(out)) == ["a", "b", "c", "sub/d", "sub/deeper/f", "sub/e"]


# --------------------------------------------------------------------------------------------------
# Bad inputs: exit 1, one line naming the file, nothing written
# --------------------------------------------------------------------------------------------------
def make_corrupt(folder: Path) -> tuple[Path, str]:
    (folder / "in").mkdir()
    sf.write(folder / "in" / "good.wav", speech_like(4000), 16000)
    (folder / "in" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return folder / "in", "corrupt.wav"


def make_non_audio(folder: Path) -> tuple[Path, str]:
    (folder / "notes.bin").write_bytes(b"\x00\x01")
    return folder / "notes.bin", "notes.bin"


def make_empty_folder(folder: Path) -> tuple[Path, str]:
    (folder / "empty_corpus" / "sub").mkdir(parents=True)
    (folder / "empty_corpus" / "readme.txt").write_text("no audio here")
    return folder / "empty_corpus", "empty_corpus"


def make_zero_length(folder: Path) -> tuple[Path, str]:
    (folder / "in").mkdir()
    sf.write(folder / "in" / "good.wav", speech_like(4000), 16000)
    sf.write(folder / "in" / "silent_zero.wav", np.zeros(0, np.float32), 16000)
    return folder / "in", "silent_zero.wav"


def make_nan(folder: Path) -> tuple[Path, str]:
    (folder / "in").mkdir()
    sf.write(folder / "in" / "good.wav", speech_like(4000), 16000)
    samples = speech_like(4000)
    samples[100] = np.nan
    sf.write(folder / "in" / "has_nan.wav", samples, 16000, subtype="FLOAT")
    return folder / "in", "has_nan.wav"


@pytest.mark.parametrize(
    "make_input", [make_corrupt, make_non_audio, make_empty_folder, make_zero_length, make_nan]
)
def test_bad_tokenize_input_fails_cleanly(
    run: Callable[..., RunResult],
    tiny_model_dir: Path,
    tmp_path: Path,
    make_input: Callable[[Path], tuple[Path, str]],
) -> None:
    source, culprit = make_input(tmp_path)
    out_dir = tmp_path / "out"
    one_line_error(run("tokenize", source, out_dir / "out.npy", "--model", tiny_model_dir), culprit)
    assert files_below(out_dir) == []


def test_skip_bad_skips_counts_and_lists(
    run: Callable[..., RunResult], tiny_model_dir: Path, tmp_path: Path
) -> None:
    source, _ = make_corrupt(tmp_path)
    sf.write(source / "silent_zero.wav", np.zeros(0, np.float32), 16000)
    samples = speech_like(4000)
    samples[7] = np.inf
    sf.write(source / "has_inf.wav", samples, 16000, subtype="FLOAT")
    out = tmp_path / "out.npy"
    code, stdout, err = run("tokenize", source, out, "--model", tiny_model_dir, "--skip-bad")
    assert code == 0, err
    assert "tokenized 1 utterances" in stdout and "3 skipped" in stdout
    skipped = json.loads(token_paths(out).meta_path.read_text())["skipped"]
    assert sorted(item["utt_id"] for item in skipped) == ["corrupt", "has_inf", "silent_zero"]
    assert all(item["path"].endswith(".wav") and item["error"] for item in skipped)
    assert list(load_tokens(out)) == ["good"]
    # nothing readable at all: an error, even with --skip-bad
    (source / "good.wav").unlink()
    one_line_error(
        run("tokenize", source, tmp_path / "none.npy", "--model", tiny_model_dir, "--skip-bad"),
        "none of the 3",
    )
    assert not (tmp_path / "none.npy").exists()


def test_existing_token_file_needs_overwrite(
    run: Callable[..., RunResult], audio_folder: Path, tiny_model_dir: Path, tokenized: Path
) -> None:
    before = tokenized.read_bytes()
    one_line_error(
        run("tokenize", audio_folder, tokenized, "--model", tiny_model_dir), "out.npy", "--overwrite"
    )
    assert tokenized.read_bytes() == before
    assert files_below(tokenized.parent) == ["out.index.tsv", "out.meta.json", "out.npy"]
    code, _, err = run(
        "tokenize", audio_folder, tokenized, "--model", tiny_model_dir, "--overwrite", "--n-q", "1"
    )
    assert code == 0, err
    assert load_tokens(tokenized).num_codebooks == 1


def test_crash_during_tokenize_leaves_nothing(
    run: Callable[..., RunResult],
    audio_folder: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    original = Tokenizer.encode_batch

    def crashing(self: Tokenizer, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise interruption
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Tokenizer, "encode_batch", crashing)
    out_dir = tmp_path / "out"
    interruption: BaseException = RuntimeError("simulated crash")
    # a bug, not the user's doing: one line that says so, and --debug (also after the command) re-raises it
    one_line_error(
        run("tokenize", audio_folder, out_dir / "out.npy", "--model", tiny_model_dir, "--batch-size", "2"),
        "internal error, a bug in vqaudio (RuntimeError: simulated crash)",
        "rerun with --debug",
    )
    assert files_below(out_dir) == []
    calls.clear()
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(
            "tokenize",
            audio_folder,
            out_dir / "out.npy",
            "--model",
            tiny_model_dir,
            "--batch-size",
            "2",
            "--debug",
        )
    assert files_below(out_dir) == []
    calls.clear()
    interruption = KeyboardInterrupt()
    code, _, _ = run(
        "tokenize", audio_folder, out_dir / "out.npy", "--model", tiny_model_dir, "--batch-size", "2"
    )
    assert code != 0
    assert files_below(out_dir) == []


def corrupt_codes(token_file: Path) -> str:
    array = np.load(token_file, mmap_mode="r+")
    array[3, 1] = 16  # codebook_size is 16
    array.flush()
    return "out.npy"


def corrupt_dtype(token_file: Path) -> str:
    np.save(token_file, np.load(token_file).astype(np.float32))
    return "out.npy"


def corrupt_shape(token_file: Path) -> str:
    np.save(token_file, np.load(token_file)[:, :2])
    return "out.npy"


def remove_index(token_file: Path) -> str:
    token_paths(token_file).index_path.unlink()
    return "out.index.tsv"


def remove_meta(token_file: Path) -> str:
    token_paths(token_file).meta_path.unlink()
    return "out.meta.json"


@pytest.mark.parametrize("damage", [corrupt_codes, corrupt_dtype, corrupt_shape, remove_index, remove_meta])
def test_bad_token_file_fails_resynth_cleanly(
    run: Callable[..., RunResult],
    tiny_model_dir: Path,
    tmp_path: Path,
    tokenized: Path,
    damage: Callable[[Path], str],
) -> None:
    culprit = damage(tokenized)
    decoded = tmp_path / "decoded"
    one_line_error(run("resynth", tokenized, decoded, "--model", tiny_model_dir), culprit)
    assert not decoded.exists() and [p for p in files_below(tmp_path) if p.startswith(".decoded")] == []


def test_resynth_refuses_another_models_tokens_unless_forced(
    run: Callable[..., RunResult], other_model_dir: Path, tmp_path: Path, tokenized: Path
) -> None:
    decoded = tmp_path / "decoded"
    one_line_error(run("resynth", tokenized, decoded, "--model", other_model_dir), "out.npy", "--force")
    assert not decoded.exists()
    code, _, err = run("resynth", tokenized, decoded, "--model", other_model_dir, "--force")
    assert code == 0, err
    assert len(list(decoded.rglob("*.wav"))) == 6


def test_resynth_into_an_existing_folder_needs_overwrite(
    run: Callable[..., RunResult], tiny_model_dir: Path, tmp_path: Path, tokenized: Path
) -> None:
    decoded = tmp_path / "decoded"
    (decoded / "sub").mkdir(parents=True)
    (decoded / "sub" / "e.wav").write_bytes(b"old")
    one_line_error(run("resynth", tokenized, decoded, "--model", tiny_model_dir), "e.wav", "--overwrite")
    assert files_below(decoded) == ["sub", "sub/e.wav"]
    code, _, err = run("resynth", tokenized, decoded, "--model", tiny_model_dir, "--overwrite")
    assert code == 0, err
    assert sf.info(decoded / "sub" / "e.wav").samplerate == 16000


def test_resynth_with_a_bad_batch_size_leaves_nothing_behind(
    tiny_tokenizer: Tokenizer, tmp_path: Path, tokenized: Path
) -> None:
    before = sorted(path.name for path in tmp_path.iterdir())
    with pytest.raises(ValueError, match="batch"):
        resynthesize_tokens(tiny_tokenizer, tokenized, tmp_path / "decoded", batch_size=0, progress=False)
    assert sorted(path.name for path in tmp_path.iterdir()) == before  # no staging folder left
