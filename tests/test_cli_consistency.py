"""Every command follows the same rules: --device, exit codes, global flags after the command, bugs reported
as bugs, help text shown as written, no progress bars in logs (vqaudio.cli.main's docstring has the rule)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import RunResult, one_line_error
from test_prior import tiny_prior, token_meta, write_tokens

from vqaudio.cli.main import _register_commands, hoist_global_flags
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.errors import DataError, InputError
from vqaudio.io.token_file import load_tokens
from vqaudio.prior import Prior
from vqaudio.prior.compression import encode_codes

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
MODEL_COMMANDS = [
    "tokenize",
    "resynth",
    "compress",
    "decompress",
    "eval",
    "demo",
    "train",
    "prior train",
    "prior eval",
    "prior sample",
    "serve",
]
ALL_COMMANDS = [*MODEL_COMMANDS, "info", "prepare", "prior info"]


@pytest.fixture
def inputs(tmp_path: Path, audio_folder: Path, tiny_model_dir: Path) -> dict[str, Path]:
    """An audio folder, a token file of three codebooks (and the first utterance as tokens.vqa), a prior for
    it, and a model, all small."""
    corpus = {f"u{i}": np.random.default_rng(i).integers(0, 16, (3, 60)) for i in range(3)}
    tokens = write_tokens(tmp_path / "tokens.npy", corpus, token_meta(num_codebooks=3))
    tokens.with_suffix(".vqa").write_bytes(
        encode_codes(corpus["u0"], Tokenizer.load(tiny_model_dir), prior=False)
    )
    prior = tiny_prior().save(tmp_path / "prior")
    return {"audio": audio_folder, "tokens": tokens, "prior": prior, "model": tiny_model_dir}


def command_line(command: str, paths: dict[str, Path], out: Path) -> list[Any]:
    """A complete command line of ``command`` that would run (every required argument given)."""
    return {
        "tokenize": ["tokenize", paths["audio"], out / "t.npy", "--model", paths["model"]],
        "resynth": ["resynth", paths["tokens"], out / "wavs", "--model", paths["model"]],
        "compress": ["compress", paths["audio"], out / "vqa", "--model", paths["model"], "--no-prior"],
        "decompress": [
            "decompress",
            paths["tokens"].with_suffix(".vqa"),
            out / "wavs",
            "--model",
            paths["model"],
        ],
        "eval": ["eval", paths["audio"], "--model", paths["model"], "--out", out / "report"],
        "demo": ["demo", paths["audio"], "--out", out / "demo", "--model", paths["model"]],
        "train": ["train", RECIPES / "tiny.yaml", "--data", paths["audio"], "--out", out / "run"],
        "prior train": ["prior", "train", paths["tokens"], "--out", out / "run", "--no-progress"],
        "prior eval": ["prior", "eval", paths["tokens"], "--prior", paths["prior"]],
        "prior sample": ["prior", "sample", out / "samples", "--prior", paths["prior"], "--tokens-only"],
        "info": ["info", paths["model"]],
        "prepare": ["prepare", paths["audio"], out / "m.tsv"],
        "prior info": ["prior", "info", paths["prior"]],
        "serve": ["serve", "--model", paths["model"], "--port", "0"],  # stops before serving in these tests
    }[command]


# --------------------------------------------------------------------------------------------------
# Exit codes: 2 usage, 1 data, the same for every command
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", MODEL_COMMANDS)
@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda"])  # no CUDA on the test machines
def test_a_bad_device_is_a_usage_error_before_any_work(
    run: Callable[..., RunResult], inputs: dict[str, Path], tmp_path: Path, command: str, device: str
) -> None:
    out = tmp_path / "out"
    code, _, err = run(*command_line(command, inputs, out), "--device", device)
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert code == 2, err
    assert "Invalid value for '--device'" in err and ("auto, cpu, cuda or cuda:N" in err or "use cpu" in err)
    assert not out.exists()


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_an_unknown_option_is_a_usage_error(
    run: Callable[..., RunResult], inputs: dict[str, Path], tmp_path: Path, command: str
) -> None:
    code, _, err = run(*command_line(command, inputs, tmp_path / "out"), "--no-such-option")
    assert code == 2 and "No such option: --no-such-option" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_a_missing_input_is_a_one_line_data_error(
    run: Callable[..., RunResult], inputs: dict[str, Path], tmp_path: Path, command: str
) -> None:
    """The command line parses; the file it names is not there: exit 1, one line naming it."""
    missing = tmp_path / "nowhere"
    paths = {**inputs, "audio": missing, "tokens": missing / "t.npy", "prior": missing}
    if command in ("tokenize", "resynth", "eval", "demo", "info", "serve"):
        paths["model" if command in ("info", "serve") else "audio"] = missing
    if command == "resynth":
        paths["tokens"] = missing / "t.npy"
    args = command_line(command, paths, tmp_path / "out")
    if command == "train":
        args[1] = missing / "recipe.yaml"
    one_line_error(run(*args), "nowhere")
    assert not (tmp_path / "out").exists() or command in ("train", "prior train")  # a run folder may be made


def test_values_that_do_not_fit_the_model_are_data_errors(
    run: Callable[..., RunResult], inputs: dict[str, Path], tmp_path: Path
) -> None:
    """--n-q parses (exit 2 only below its minimum); above the model's codebooks it is exit 1, one line."""
    args = command_line("tokenize", inputs, tmp_path)
    assert run(*args, "--n-q", "0")[0] == 2
    one_line_error(run(*args, "--n-q", "9"), "n_q", "3")
    one_line_error(run(*command_line("prior sample", inputs, tmp_path), "--speaker", "anna"), "--speaker")
    assert not (tmp_path / "t.npy").exists() and not (tmp_path / "samples").exists()


# --------------------------------------------------------------------------------------------------
# User errors versus bugs
# --------------------------------------------------------------------------------------------------
def test_an_internal_value_error_is_reported_as_a_bug_not_as_bad_input(
    run: Callable[..., RunResult], inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vqaudio.codec.corpus_coding as corpus_coding

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("an index out of step")

    monkeypatch.setattr(corpus_coding, "tokenize_corpus", broken)
    args = command_line("tokenize", inputs, tmp_path)
    line = one_line_error(run(*args), "internal error, a bug in vqaudio (ValueError: an index out of step)")
    assert "rerun with --debug for the traceback" in line
    with pytest.raises(ValueError, match="an index out of step"):
        run(*args, "--debug")

    def refuses(*args: object, **kwargs: object) -> None:
        raise InputError("n_q must be between 1 and 3, got 7")

    monkeypatch.setattr(corpus_coding, "tokenize_corpus", refuses)
    line = one_line_error(run(*args), "n_q must be between 1 and 3, got 7")
    assert line == "error: n_q must be between 1 and 3, got 7"


def test_running_out_of_memory_is_one_line_with_what_to_lower(
    run: Callable[..., RunResult], inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vqaudio.codec.corpus_coding as corpus_coding

    def exhausted(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(corpus_coding, "tokenize_corpus", exhausted)
    line = one_line_error(run(*command_line("tokenize", inputs, tmp_path)), "out of memory", "--batch-size")
    assert "bug" not in line and "Tried to allocate 2.00 GiB" in line


def test_user_errors_are_their_own_type_and_still_value_errors(tiny_tokenizer: Tokenizer) -> None:
    """Python callers catching ValueError keep working; the CLI tells them apart by InputError."""
    with pytest.raises(InputError, match="n_q must be an integer between 1 and num_codebooks=3"):
        tiny_tokenizer.encode(np.zeros(1600, dtype=np.float32), 16000, n_q=9)
    assert issubclass(InputError, ValueError)
    from vqaudio.config import ConfigError, ModelConfig, QuantizerConfig

    assert issubclass(ConfigError, InputError)
    with pytest.raises(ConfigError, match="group VQ splits latent_dim"):  # was a plain ValueError
        ModelConfig(latent_dim=10, quantizer=QuantizerConfig(kind="group", num_codebooks=4)).validate()


# --------------------------------------------------------------------------------------------------
# Global flags after the command
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, expected",
    [
        (["tokenize", "a.wav", "t.npy", "-q"], ["-q", "tokenize", "a.wav", "t.npy"]),
        (["tokenize", "--debug", "a.wav", "t.npy"], ["--debug", "tokenize", "a.wav", "t.npy"]),
        (["-q", "info", "--json", "--debug"], ["-q", "--debug", "info", "--json"]),
        (["prior", "-q", "train", "t.npy"], ["-q", "prior", "train", "t.npy"]),
        (["prior", "train", "t.npy", "--quiet"], ["--quiet", "prior", "train", "t.npy"]),
        (["prior", "train", "t.npy", "--set", "-q"], ["prior", "train", "t.npy", "--set", "-q"]),  # a value
        (["tokenize", "a.wav", "--", "-q"], ["tokenize", "a.wav", "--", "-q"]),  # after --: an argument
        (["nonsense", "-q"], ["nonsense", "-q"]),  # click reports the unknown command
    ],
)
def test_global_flags_after_the_command_move_to_the_front(args: list[str], expected: list[str]) -> None:
    _register_commands()
    assert hoist_global_flags(args) == expected


@pytest.mark.parametrize("position", ["before", "after", "between"])
def test_debug_works_in_any_position(run: Callable[..., RunResult], tmp_path: Path, position: str) -> None:
    missing = str(tmp_path / "nowhere")
    args = {
        "before": ["--debug", "info", missing],
        "after": ["info", missing, "--debug"],
        "between": ["info", "--debug", missing],
    }[position]
    one_line_error(run("info", missing), "nowhere")  # without it: one line
    with pytest.raises(FileNotFoundError, match="nowhere"):  # with it: the exception and its traceback
        run(*args)


def test_quiet_after_the_command_silences_the_info_lines(inputs: dict[str, Path], tmp_path: Path) -> None:
    """In a fresh process (the log level is set once per process). Without -q, `prior sample` logs its speed
    ("1 x 10 frames in 0.0 s") at INFO; left in place, -q would be an unknown option (exit 2)."""
    command = [sys.executable, "-m", "vqaudio.cli.main", "prior", "sample", str(tmp_path / "samples")]
    command += ["--prior", str(inputs["prior"]), "--tokens-only", "--seconds", "0.2", "-q"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # the speed line (INFO) is gone; a warning would stay (this test prior records no pitch rows: one does)
    assert "frames in" not in done.stderr and all("pitch row" in line for line in done.stderr.splitlines())
    assert "samples.npy" in done.stdout


# --------------------------------------------------------------------------------------------------
# Help text, progress bars
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, phrase",
    [
        (["tokenize", "--help"], "OUT.npy ([frames, n_q] codes)"),
        (["tokenize", "--help"], "auto|cpu|cuda[:N]"),
    ],
)
def test_help_shows_brackets_as_written(run: Callable[..., RunResult], args: list[str], phrase: str) -> None:
    code, out, _ = run(*args)
    assert code == 0 and phrase in " ".join(out.split()), out  # the text is wrapped: compare words


def test_no_progress_bars_when_stderr_is_not_a_terminal(
    run: Callable[..., RunResult], inputs: dict[str, Path], tmp_path: Path
) -> None:
    code, _, err = run(*command_line("tokenize", inputs, tmp_path))  # captured stderr: not a terminal
    assert code == 0 and "tokenizing" not in err and "%|" not in err, err


# --------------------------------------------------------------------------------------------------
# --device reaches the model: auto, cpu, and what auto picks where CUDA is available
# --------------------------------------------------------------------------------------------------
def test_device_cpu_and_auto_give_the_same_tokens_here(
    run: Callable[..., RunResult], inputs: dict[str, Path], tmp_path: Path
) -> None:
    arrays = {}
    for device in ("cpu", "auto"):
        out = tmp_path / device / "t.npy"
        code, _, err = run("tokenize", inputs["audio"], out, "--model", inputs["model"], "--device", device)
        assert code == 0, err
        arrays[device] = load_tokens(out).array
    assert (arrays["cpu"] == arrays["auto"]).all()


@pytest.mark.parametrize("command", MODEL_COMMANDS)
@pytest.mark.parametrize(
    "flags, cuda, expected",
    [
        ([], False, "cpu"),  # auto is the default of every command, eval's included
        ([], True, "cuda"),
        (["--device", "cpu"], True, "cpu"),
        (["--device", "cuda:1"], True, "cuda:1"),
    ],
)
def test_the_device_reaches_the_model(
    run: Callable[..., RunResult],
    inputs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    flags: list[str],
    cuda: bool,
    expected: str,
) -> None:
    """Without a GPU: torch is told it has two, and the loaders record the device they are given."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2 if cuda else 0)
    received: list[torch.device] = []

    def record(device: Any) -> None:
        received.append(torch.device(device))
        raise DataError("stopped here")

    monkeypatch.setattr(Tokenizer, "load", lambda path=None, device="cpu": record(device))
    monkeypatch.setattr(Prior, "to", lambda self, device: record(device))
    import vqaudio.codec.training
    import vqaudio.prior.training

    monkeypatch.setattr(vqaudio.codec.training, "train_tokenizer", lambda *a, device, **k: record(device))
    monkeypatch.setattr(vqaudio.prior.training, "train_prior", lambda *a, device, **k: record(device))
    args = command_line(command, inputs, tmp_path / "out")
    one_line_error(run(*args, *flags), "stopped here")
    assert received == [torch.device(expected)]
