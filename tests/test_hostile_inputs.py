"""Hostile inputs (issue 24): odd audio, folders, manifests and names are refused or skipped, naming the file.

One folder walk (``vqaudio.data.utterance.find_audio_files``: symlink loops end, only regular files), one
audio gate (``vqaudio.io.audio``: rates, lengths, 0 samples, NaN/Inf, peaks), one id and name check
(``vqaudio.io.inputs``) and one text reader: these tests try members of each class through the commands and
readers that use them (tokenize, prepare, eval, train, manifests, token files).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import RunResult, speech_like

from vqaudio.codec.corpus_coding import resynthesize_tokens, tokenize_corpus
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.data.corpus import fill_headers, load_corpus
from vqaudio.data.crops import RandomCrops
from vqaudio.data.manifest import read_manifest, write_manifest
from vqaudio.data.prepare import prepare_manifests
from vqaudio.data.utterance import Utterance
from vqaudio.errors import AudioError, DataError, TokenFileError
from vqaudio.io.audio import audio_info, load_audio, save_audio, to_model_input
from vqaudio.io.token_file import TokenFileWriter, load_tokens, token_paths

RATE = 16000


def wav(path: Path, samples: int = 1600, rate: int = RATE, seed: int = 0, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), speech_like(samples, seed=seed), rate, subtype=subtype)
    return path


def float_wav(path: Path, audio: np.ndarray, rate: int = RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.astype(np.float32), rate, subtype="FLOAT")
    return path


def ids(source: Path) -> list[str]:
    return [utt.id for utt in load_corpus(source)]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


# --------------------------------------------------------------------------------------------------
# The folder walk: symlink loops, special files, odd names (SW1 and the last bullet)
# --------------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_symlink_loops_are_walked_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    corpus = tmp_path / "corpus"
    wav(corpus / "a.wav")
    wav(corpus / "sub" / "b.wav")
    (corpus / "sub" / "up").symlink_to("..")  # one loop: the old walk listed a.wav 41 times
    (corpus / "sub" / "again").symlink_to("..")  # two loops: the old walk never finished
    with caplog.at_level(logging.WARNING):
        assert ids(corpus) == ["a", "sub/b"]
    assert any("already walked" in message for message in warnings_of(caplog))
    result = prepare_manifests(corpus, tmp_path / "m.tsv", progress=False)
    assert result.stats["all"].utterances == 2


def test_a_folder_linked_twice_is_read_once_and_the_walk_order_is_fixed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    wav(outside / "x.wav")
    corpus = tmp_path / "corpus"
    wav(corpus / "z.wav")
    (corpus / "link1").symlink_to(outside)
    (corpus / "link2").symlink_to(outside)
    assert ids(corpus) == ["link1/x", "z"]  # the first link in name order wins
    assert ids(corpus) == ["link1/x", "z"]


@pytest.mark.timeout(60)
def test_fifos_and_sockets_named_like_audio_are_skipped_never_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, tiny_tokenizer: Tokenizer
) -> None:
    corpus = tmp_path / "corpus"
    wav(corpus / "good.wav")
    os.mkfifo(corpus / "pipe.wav")  # opening it for reading would block forever
    os.mkdir(corpus / "folder.wav")  # a folder with an audio name is walked, not read
    with caplog.at_level(logging.WARNING):
        assert [utt.id for utt in fill_headers(load_corpus(corpus), progress=False)] == ["good"]
    assert any("pipe.wav" in message and "not a regular file" in message for message in warnings_of(caplog))
    summary = tokenize_corpus(tiny_tokenizer, corpus, tmp_path / "t.npy", progress=False)
    assert summary.num_utterances == 1
    # named directly, in a manifest or a list file: refused with the reason, never opened
    with pytest.raises(AudioError, match=r"pipe\.wav: is a FIFO"):
        audio_info(corpus / "pipe.wav")
    with pytest.raises(AudioError, match=r"pipe\.wav: is a FIFO"):
        load_audio(corpus / "pipe.wav", RATE)
    (tmp_path / "m.tsv").write_text("path\ncorpus/good.wav\ncorpus/pipe.wav\n")
    with pytest.raises(DataError, match=r"pipe\.wav is a FIFO"):
        read_manifest(tmp_path / "m.tsv")
    (tmp_path / "l.txt").write_text("corpus/pipe.wav\n")
    with pytest.raises(DataError, match=r"pipe\.wav is a FIFO"):
        load_corpus(tmp_path / "l.txt")
    os.mkfifo(tmp_path / "fifo.tsv")
    with pytest.raises(DataError, match=r"fifo\.tsv: is a FIFO"):
        load_corpus(tmp_path / "fifo.tsv")


def test_a_broken_symlink_is_named_and_skipped_with_skip_bad(
    tmp_path: Path, tiny_tokenizer: Tokenizer
) -> None:
    corpus = tmp_path / "corpus"
    wav(corpus / "good.wav")
    (corpus / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    with pytest.raises(AudioError, match=r"gone\.wav: does not exist"):
        tokenize_corpus(tiny_tokenizer, corpus, tmp_path / "t.npy", progress=False)
    summary = tokenize_corpus(tiny_tokenizer, corpus, tmp_path / "t.npy", skip_bad=True, progress=False)
    assert [item["utt_id"] for item in summary.skipped] == ["gone"]


@pytest.mark.parametrize("name", ["tab\there.wav", "new\nline.wav", "form\x0cfeed.wav", "sep\x1crecord.wav"])
def test_names_that_would_break_a_tsv_row_are_refused_before_any_work(tmp_path: Path, name: str) -> None:
    corpus = tmp_path / "corpus"
    wav(corpus / "good.wav")
    wav(corpus / name)
    for source in (corpus, corpus / name):  # a folder, or the one file
        with pytest.raises(DataError, match=r"rename the file"):
            load_corpus(source)
    with pytest.raises(DataError, match=r"rename the file"):
        prepare_manifests(corpus, tmp_path / "m.tsv", progress=False)
    assert not (tmp_path / "m.tsv").exists()


def test_a_file_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    wav(corpus / "good.wav")
    wav(corpus / "cafe.wav")
    os.rename(os.fsencode(corpus / "cafe.wav"), os.fsencode(corpus) + b"/caf\xe9.wav")  # Latin-1: not UTF-8
    with pytest.raises(DataError, match=r"not UTF-8.*rename the file"):
        load_corpus(corpus)


# --------------------------------------------------------------------------------------------------
# Utterance ids (SW2): what tokenize writes, resynth can write back
# --------------------------------------------------------------------------------------------------
def test_ids_derived_from_dotdot_paths_are_relative_and_resynthesize(
    tmp_path: Path, tiny_tokenizer: Tokenizer
) -> None:
    wav(tmp_path / "audio" / "ok.wav")
    wav(tmp_path / "audio" / "sub" / "two.wav", seed=1)
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "m.tsv").write_text("../audio/ok.wav\n../audio/./sub/two.wav\n")
    assert ids(lists / "m.tsv") == ["audio/ok", "audio/sub/two"]
    tokenize_corpus(tiny_tokenizer, lists / "m.tsv", tmp_path / "t.npy", progress=False)
    written = resynthesize_tokens(tiny_tokenizer, tmp_path / "t.npy", tmp_path / "out", progress=False)
    assert [path.relative_to(tmp_path / "out").as_posix() for path in written] == [
        "audio/ok.wav",
        "audio/sub/two.wav",
    ]
    absolute = tmp_path / "abs.tsv"
    absolute.write_text(f"{tmp_path / 'audio' / 'ok.wav'}\n")
    assert ids(absolute)[0].endswith("audio/ok") and not ids(absolute)[0].startswith("/")


@pytest.mark.parametrize("bad_id", ["../escape", "/etc/x", ".", "a//b", "a/./b", "x" * 300])
def test_explicit_ids_resynth_could_not_write_are_refused(tmp_path: Path, bad_id: str) -> None:
    wav(tmp_path / "a.wav")
    (tmp_path / "m.tsv").write_text(f"id\tpath\n{bad_id}\ta.wav\n")
    with pytest.raises(DataError, match=r"m\.tsv: utterance id .*fix the id"):
        read_manifest(tmp_path / "m.tsv")
    (tmp_path / "l.scp").write_text(f"{bad_id} a.wav\n")
    with pytest.raises(DataError, match=r"l\.scp: utterance id"):
        load_corpus(tmp_path / "l.scp")
    writer = TokenFileWriter(
        tmp_path / "t.npy",
        num_codebooks=1,
        codebook_size=4,
        sample_rate=RATE,
        hop_length=320,
        model_name="m",
        model_hash="h",
    )
    with pytest.raises(ValueError, match="utterance id"):
        writer.add(bad_id, tmp_path / "a.wav", np.zeros((1, 2), np.int64), 640)
    writer.abort()
    utterance = Utterance(bad_id, tmp_path / "a.wav", 1600, RATE)
    with pytest.raises(DataError, match="utterance"):
        write_manifest([utterance], tmp_path / "out.tsv")


# --------------------------------------------------------------------------------------------------
# Text inputs: manifest headers (UM5), encodings (UM1)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("header", ["id\tfile\tsamples", "utt_id\tfilename", "Path\tsamples"])
def test_a_header_without_a_path_column_is_an_error_not_a_data_row(tmp_path: Path, header: str) -> None:
    wav(tmp_path / "a.wav")
    (tmp_path / "m.tsv").write_text(f"{header}\na.wav\t1600\n")
    with pytest.raises(DataError, match=r"m\.tsv:1: the header .* has no 'path' column"):
        read_manifest(tmp_path / "m.tsv")


def test_a_fairseq_manifest_and_a_bom_still_read(tmp_path: Path) -> None:
    wav(tmp_path / "audio" / "a.wav")
    (tmp_path / "f.tsv").write_text("audio\na.wav\t1600\n")
    assert ids(tmp_path / "f.tsv") == ["a"]
    (tmp_path / "b.tsv").write_bytes("\ufeffid\tpath\nx\taudio/a.wav\n".encode())
    assert ids(tmp_path / "b.tsv") == ["x"]


def test_text_files_that_are_not_utf8_name_the_file(tmp_path: Path, tiny_tokenizer: Tokenizer) -> None:
    wav(tmp_path / "a.wav")
    (tmp_path / "m.tsv").write_bytes(b"path\na.wav\n\xff\xfe.wav\n")
    with pytest.raises(DataError, match=r"m\.tsv:3: the manifest is not UTF-8 text \(byte 0xff"):
        read_manifest(tmp_path / "m.tsv")
    (tmp_path / "l.txt").write_bytes(b"a.wav\n\xff.wav\n")
    with pytest.raises(DataError, match=r"l\.txt:2: the list file is not UTF-8"):
        load_corpus(tmp_path / "l.txt")
    tokenize_corpus(tiny_tokenizer, tmp_path / "a.wav", tmp_path / "t.npy", progress=False)
    index = token_paths(tmp_path / "t.npy").index_path
    index.write_bytes(index.read_bytes().replace(b"\na\t", b"\n\xff\t", 1))
    with pytest.raises(
        TokenFileError, match=r"t\.index\.tsv:2: the token index is not UTF-8.*vqaudio tokenize"
    ):
        load_tokens(tmp_path / "t.npy")


# --------------------------------------------------------------------------------------------------
# The audio gate: rates (CR3), lengths, 0 samples after resampling (CR4), NaN/Inf, peaks (SW8)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [1, 999, 400_000])
def test_implausible_sample_rates_are_refused_naming_the_file(tmp_path: Path, rate: int) -> None:
    path = float_wav(tmp_path / "odd.wav", np.full(100, 0.1), rate=rate)
    for read in (lambda: audio_info(path), lambda: load_audio(path, RATE)):
        with pytest.raises(AudioError, match=rf"odd\.wav: sample rate {rate} Hz is outside"):
            read()
    with pytest.raises(AudioError, match=r"fix the file's header or remove it, or pass --skip-bad"):
        fill_headers(load_corpus(tmp_path), progress=False)
    with pytest.raises(AudioError, match=r"array: sample rate"):
        to_model_input(np.zeros(100, np.float32), rate, RATE, "array")


def test_a_rate_a_manifest_gives_is_checked_too(tmp_path: Path, tiny_tokenizer: Tokenizer) -> None:
    wav(tmp_path / "a.wav")
    wav(tmp_path / "b.wav")
    (tmp_path / "m.tsv").write_text("path\tsamples\tsample_rate\na.wav\t1600\t16000\nb.wav\t1600\t1\n")
    with pytest.raises(AudioError, match=r"b\.wav: sample rate 1 Hz"):
        fill_headers(read_manifest(tmp_path / "m.tsv"), progress=False)
    summary = tokenize_corpus(
        tiny_tokenizer, tmp_path / "m.tsv", tmp_path / "t.npy", skip_bad=True, progress=False
    )
    assert [item["utt_id"] for item in summary.skipped] == ["b"]


def test_files_over_the_length_limit_are_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = wav(tmp_path / "long.wav", samples=RATE)
    monkeypatch.setenv("VQAUDIO_MAX_AUDIO_SECONDS", "0.5")
    with pytest.raises(
        AudioError, match=r"long\.wav: 1 s of audio .* over the limit of 0 s.*VQAUDIO_MAX_AUDIO_SECONDS"
    ):
        load_audio(path, RATE)
    assert load_audio(path, RATE, start=0, num_samples=4000).shape == (4000,)  # a crop is within the limit
    monkeypatch.setenv("VQAUDIO_MAX_AUDIO_SECONDS", "2")
    assert load_audio(path, RATE).shape == (RATE,)
    monkeypatch.setenv("VQAUDIO_MAX_AUDIO_SECONDS", "lots")
    with pytest.raises(ValueError, match="VQAUDIO_MAX_AUDIO_SECONDS must be a positive number"):
        load_audio(path, RATE)


def test_a_file_that_resamples_to_nothing_is_named_and_skipped(
    tmp_path: Path, tiny_tokenizer: Tokenizer
) -> None:
    corpus = tmp_path / "corpus"
    wav(corpus / "good.wav")
    float_wav(corpus / "one_sample.wav", np.array([0.1]), rate=48000)
    with pytest.raises(AudioError, match=r"one_sample\.wav: 1 sample\(s\) at 48000 Hz resample to 0 samples"):
        load_audio(corpus / "one_sample.wav", RATE)
    with pytest.raises(AudioError, match=r"one_sample\.wav"):
        tokenize_corpus(tiny_tokenizer, corpus, tmp_path / "t.npy", progress=False)
    summary = tokenize_corpus(tiny_tokenizer, corpus, tmp_path / "t.npy", skip_bad=True, progress=False)
    assert list(load_tokens(tmp_path / "t.npy")) == ["good"]
    assert [item["utt_id"] for item in summary.skipped] == ["one_sample"]


def test_audio_far_outside_full_scale_is_used_as_is_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loud = speech_like(1600) / 0.3 * 300  # a float WAV peaking near 300
    path = float_wav(tmp_path / "loud.wav", loud)
    with caplog.at_level(logging.WARNING):
        first = load_audio(path, RATE)
        load_audio(path, RATE, start=100, num_samples=800)
    assert float(first.abs().max()) == pytest.approx(float(np.abs(loud).max()), rel=1e-6)  # not rescaled
    messages = [message for message in warnings_of(caplog) if "loud.wav" in message]
    assert len(messages) == 1 and "far outside [-1, 1]" in messages[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        save_audio(tmp_path / "out.wav", first, RATE)
    assert any("out.wav" in message and "clipped" in message for message in warnings_of(caplog))
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # resynth writes into a staging folder: the final name is said
        save_audio(tmp_path / ".staging" / "x.wav", first, RATE, name=tmp_path / "out" / "x.wav")
    assert any(message.startswith(f"{tmp_path / 'out' / 'x.wav'}: ") for message in warnings_of(caplog))
    assert np.abs(sf.read(str(tmp_path / "out.wav"))[0]).max() <= 1.0
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # ordinary audio, and the usual small overs: nothing to say
        load_audio(wav(tmp_path / "quiet.wav"), RATE)
        save_audio(tmp_path / "over.wav", np.full(10, 1.2, np.float32), RATE)
    assert warnings_of(caplog) == []


# --------------------------------------------------------------------------------------------------
# --skip-bad everywhere: tokenize, prepare, eval (CR5), train (UM3); skip warnings without the hint (UM8)
# --------------------------------------------------------------------------------------------------
def bad_corpus(folder: Path) -> Path:
    """Two good files and one each of: unreadable, NaN, 0 samples after resampling, a 1 Hz header."""
    wav(folder / "good1.wav", samples=8000)
    wav(folder / "good2.wav", samples=8000, seed=1)
    (folder / "broken.wav").write_bytes(b"RIFF not really a wav file")
    nan = speech_like(4000)
    nan[10] = np.nan
    float_wav(folder / "nan.wav", nan)
    float_wav(folder / "tiny48k.wav", np.array([0.1]), rate=48000)
    float_wav(folder / "onehz.wav", np.full(100, 0.1), rate=1)
    return folder


def test_tokenize_skip_bad_warnings_do_not_suggest_skip_bad(
    run: Callable[..., RunResult], tmp_path: Path, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = bad_corpus(tmp_path / "corpus")
    with caplog.at_level(logging.WARNING):
        code, stdout, err = run(
            "tokenize", corpus, tmp_path / "t.npy", "--model", tiny_model_dir, "--skip-bad"
        )
    assert code == 0, err
    assert "4 skipped" in stdout
    skipped = json.loads(token_paths(tmp_path / "t.npy").meta_path.read_text())["skipped"]
    assert sorted(item["utt_id"] for item in skipped) == ["broken", "nan", "onehz", "tiny48k"]
    assert all("--skip-bad" not in item["error"] for item in skipped)
    warnings = [message for message in warnings_of(caplog) if message.startswith("skipping")]
    assert len(warnings) == 4 and all(line.endswith("(--skip-bad)") for line in warnings), warnings
    assert all("or pass --skip-bad" not in line for line in warnings)
    code, _, err = run("tokenize", corpus, tmp_path / "u.npy", "--model", tiny_model_dir)
    assert code == 1 and err.strip().endswith("or pass --skip-bad")  # without it, the hint is right


def test_prepare_skip_bad_warnings_do_not_suggest_skip_bad(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = bad_corpus(tmp_path / "corpus")
    with caplog.at_level(logging.WARNING):
        result = prepare_manifests(corpus, tmp_path / "m.tsv", skip_bad=True, progress=False)
    assert result.stats["all"].utterances == 4  # header checks cannot see NaN or 0 samples after resampling
    assert "onehz" not in ids(tmp_path / "m.tsv") and "broken" not in ids(tmp_path / "m.tsv")
    assert all("pass --skip-bad" not in message for message in warnings_of(caplog))


def test_a_single_file_command_does_not_suggest_skip_bad(
    run: Callable[..., RunResult], tmp_path: Path, tiny_model_dir: Path
) -> None:
    path = float_wav(tmp_path / "onehz.wav", np.full(100, 0.1), rate=1)
    code, _, err = run("resynth", path, tmp_path / "out.wav", "--model", tiny_model_dir)
    assert code == 1 and "onehz.wav: sample rate 1 Hz" in err and "--skip-bad" not in err


def test_eval_scores_a_one_sample_clip_and_skips_unusable_files(
    tmp_path: Path, tiny_tokenizer: Tokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    from vqaudio.evaluation.evaluate import evaluate
    from vqaudio.evaluation.results import EvalOptions

    corpus = tmp_path / "corpus"
    wav(corpus / "good.wav", samples=8000)
    float_wav(corpus / "one.wav", np.array([0.1]))
    options = EvalOptions(n_q=(3,), baselines=False, num_examples=0, progress=False, voice=False)
    result = evaluate(corpus, tiny_tokenizer, options)  # pystoi failed inside on one sample: no file named
    assert [utt.id for utt in result.utterances] == ["good", "one"]
    assert any("stoi" in failure for failure in result.systems[0].scores["one"].failures)
    float_wav(corpus / "tiny48k.wav", np.array([0.1]), rate=48000)
    nan = speech_like(4000)
    nan[3] = np.inf
    float_wav(corpus / "inf.wav", nan)
    with pytest.raises(AudioError, match=r"inf\.wav: audio holds NaN or Inf"):
        evaluate(corpus, tiny_tokenizer, options)
    skip = EvalOptions(n_q=(3,), baselines=False, num_examples=0, progress=False, voice=False, skip_bad=True)
    with caplog.at_level(logging.WARNING):
        result = evaluate(corpus, tiny_tokenizer, skip)
    assert sorted(Path(path).name for path, _ in result.skipped) == ["inf.wav", "tiny48k.wav"]
    assert all("--skip-bad" not in error for _, error in result.skipped)
    assert all("pass --skip-bad" not in message for message in warnings_of(caplog))


def test_stoi_on_a_clip_shorter_than_its_frame_is_a_metric_error() -> None:
    pytest.importorskip("pystoi")
    from vqaudio.evaluation.metrics import MetricError, stoi

    clip = speech_like(100)
    with pytest.raises(MetricError, match="too short for STOI"):
        stoi(clip, clip, RATE)


@pytest.mark.parametrize("cache", [False, True])
def test_training_crops_skip_nan_files_with_skip_bad(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, cache: bool
) -> None:
    good = wav(tmp_path / "good.wav", samples=4000)
    nan = speech_like(4000)
    nan[::50] = np.nan  # every crop of it holds NaN
    bad = float_wav(tmp_path / "nan.wav", nan)
    corpus = [Utterance("good", good, 4000, RATE), Utterance("nan", bad, 4000, RATE)]
    with pytest.raises(AudioError, match=r"nan\.wav: audio holds NaN or Inf.*or pass --skip-bad"):
        crops = RandomCrops(corpus, RATE, 800, batch_size=4, seed=0, cache=cache)  # the cache decodes now
        for step in range(10):  # without a cache, the crops do
            crops[step]
    with caplog.at_level(logging.WARNING):
        crops = RandomCrops(corpus, RATE, 800, batch_size=4, seed=0, cache=cache, skip_bad=True)
        batches = [crops[step] for step in range(10)]
    assert all(bool(torch.isfinite(batch).all()) and float(batch.abs().max()) > 0 for batch in batches)
    messages = [message for message in warnings_of(caplog) if "nan.wav" in message]
    assert (
        len(messages) == 1 and messages[0].endswith("(--skip-bad)") and "pass --skip-bad" not in messages[0]
    )
    again = RandomCrops(corpus, RATE, 800, batch_size=4, seed=0, cache=cache, skip_bad=True)
    assert all(torch.equal(again[step], batches[step]) for step in range(10))  # still a function of the step


def test_cli_train_skip_bad_skips_nan_files(
    run: Callable[..., RunResult], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    recipes = Path(__file__).resolve().parents[1] / "recipes"
    data = tmp_path / "data"
    for index in range(4):
        wav(data / f"good{index}.wav", samples=12000, seed=index)
    nan = speech_like(12000)
    nan[5] = np.nan
    float_wav(data / "nan.wav", nan)
    args = ["train", recipes / "tiny.yaml", "--data", data, "--out", tmp_path / "run", "--no-progress"]
    args += [
        "--max-steps",
        "1",
        "--threads",
        "1",
        "--set",
        "train.batch_size=2",
        "--set",
        "train.num_validation_files=0",
    ]
    code, _, err = run(*args)
    assert code == 1 and "nan.wav: audio holds NaN or Inf" in err
    args[5] = tmp_path / "run2"
    with caplog.at_level(logging.WARNING):
        code, _, err = run(*args, "--skip-bad")
    assert code == 0, err
    messages = [message for message in warnings_of(caplog) if "nan.wav" in message]
    assert messages and all("pass --skip-bad" not in message for message in messages)
