"""Hostile configs and descriptions (issue 24): model config.json, prior configs, recipes, token metadata and
run-time options. Every number read from a file is checked against the ranges declared in vqaudio/config.py
before anything is built from it: one line naming the file, the field, the value and the allowed range;
nothing allocated, nothing written."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import RunResult, one_line_error

from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.config import (
    Config,
    ConfigError,
    PriorConfig,
    PriorRunConfig,
    PriorTrainConfig,
    TrainConfig,
    load_yaml,
    parse_override,
    replace_path,
)
from vqaudio.errors import ModelFileError, TokenFileError
from vqaudio.io.token_file import TokenFileWriter, load_tokens, token_paths
from vqaudio.prior import Prior
from vqaudio.prior.prior import token_stream
from vqaudio.prior.wavenet import WaveNetPrior


@pytest.fixture(autouse=True)
def keep_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def set_key(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    node = data
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    return data


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the tiny tokenizer's folder that a test may damage."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


# --------------------------------------------------------------------------------------------------
# Tokenizer model files: config.json is not covered by the weights hash (CR2, CR7, UM7)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("model.quantizer.num_codebooks", 65, "[1, 64]"),
        ("model.quantizer.num_codebooks", 10_000_000, "[1, 64]"),  # CR2: GBs of RSS before any check
        ("model.encoder.channels", -4, "[1, 4096]"),
        ("model.decoder.channels", 10**7, "[1, 4096]"),
        ("model.sample_rate", 0, "[1000, 384000]"),
        ("model.sample_rate", -16000, "[1000, 384000]"),  # UM7: "lengths[0] must be a non-negative integer"
        ("model.encoder.strides", [0], "[1, 64]"),
        ("model.quantizer.codebook_size", 2**40, "[2, 65536]"),
        ("model.encoder.mel_n_fft", 10**9, "[16, 65536]"),
        ("model.encoder.dilation_base", 1000, "[1, 8]"),
        ("model.latent_dim", 0, "[1, 4096]"),
    ],
)
def test_out_of_range_model_config_is_one_line_naming_file_field_and_range(
    model_copy: Path, field: str, value: Any, allowed: str
) -> None:
    edit_json(model_copy / "config.json", lambda meta: set_key(meta, f"config.{field}", value))
    tic = time.perf_counter()
    with pytest.raises(ModelFileError) as caught:
        Tokenizer.load(model_copy)
    assert time.perf_counter() - tic < 5  # refused before anything is built
    message = str(caught.value)
    assert "\n" not in message
    for needle in (str(model_copy / "model.safetensors"), field.rsplit(".", 1)[-1], allowed):
        assert needle in message, (needle, message)


def test_a_config_in_range_that_does_not_make_the_weights_is_caught_from_the_header(
    model_copy: Path,
) -> None:
    # 1024 codes is a fine codebook size, but the weights hold 16: named, with both shapes, before loading them
    edit_json(
        model_copy / "config.json", lambda meta: set_key(meta, "config.model.quantizer.codebook_size", 1024)
    )
    with pytest.raises(ModelFileError, match=r"codebook has shape \[16, 8\], the config makes \[1024, 8\]"):
        Tokenizer.load(model_copy)


def test_a_weights_file_far_larger_than_its_header_describes_is_refused_unread(model_copy: Path) -> None:
    weights = model_copy / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as handle:  # 10 GB, sparse: nothing is written to disk
        handle.truncate(10 * 2**30)
    tic = time.perf_counter()
    with pytest.raises(ModelFileError, match=rf"{10 * 2**30} bytes, but its header describes {size}"):
        Tokenizer.load(model_copy)
    assert time.perf_counter() - tic < 5


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"format": "vqaudio-tokenizer", "config": null}', "'config' is null"),  # UM7
        ("[1, 2, 3]", "holds a JSON list, expected an object"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),  # RecursionError
        ('{"format": "vqaudio-tokenizer", "config": {}, "training": [1]}', "'training' is a JSON list"),
    ],
    ids=["config-null", "list", "deep", "training-list"],
)
def test_a_description_that_is_not_a_model_description_is_one_line(
    model_copy: Path, run: Callable[..., RunResult], text: str, needle: str
) -> None:
    (model_copy / "config.json").write_text(text)
    with pytest.raises(ModelFileError, match=needle):
        Tokenizer.load(model_copy)
    one_line_error(run("info", model_copy), str(model_copy / "config.json"), needle)


def test_an_empty_config_section_in_a_model_file_is_an_error_not_the_defaults(model_copy: Path) -> None:
    edit_json(model_copy / "config.json", lambda meta: set_key(meta, "config.model", None))
    with pytest.raises(ModelFileError, match=r"config\.model: is empty"):
        Tokenizer.load(model_copy)


def test_format_version_that_is_not_a_number_is_named(model_copy: Path) -> None:
    edit_json(model_copy / "config.json", lambda meta: set_key(meta, "format_version", [1]))
    with pytest.raises(ModelFileError, match=r"format_version must be an integer, got \[1\]"):
        Tokenizer.load(model_copy)


# --------------------------------------------------------------------------------------------------
# Prior model files (CR2: num_cycles 1000000)
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def prior_dir(tmp_path: Path) -> Path:
    config = PriorConfig(
        num_codebooks=3, codebook_size=16, residual_channels=8, skip_channels=8, head_channels=8,
        layers_per_cycle=2, num_cycles=1,
    )  # fmt: skip
    meta = {"model_hash": "ab" * 32, "model_name": "tiny", "sample_rate": 16000, "hop_length": 320,
            "frame_rate": 50.0, "num_codebooks": 3, "codebook_size": 16}  # fmt: skip
    prior = Prior(WaveNetPrior(config), PriorRunConfig(prior=config), token_stream(meta))
    prior.save(tmp_path / "prior")
    return tmp_path / "prior"


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("config.prior.num_cycles", 1_000_000, "num_cycles: 1000000 is outside the allowed range [1, 64]"),
        ("config.prior.residual_channels", 0, "residual_channels: 0 is outside the allowed range [1, 4096]"),
        ("config.train.log_every", 0, "log_every: 0 is outside the allowed range [1, 1000000000]"),
        ("tokens.frame_rate", 0, "field 'frame_rate': 0 is outside the allowed range (0, 384000]"),
        ("tokens.codebook_size", 32, "the tokens record says 3 codebooks x 32 codes, the config 3 x 16"),
        ("config.prior.layers_per_cycle", 3, "the weights do not match the saved config"),
    ],
)
def test_out_of_range_prior_descriptions_are_one_line(
    prior_dir: Path, run: Callable[..., RunResult], field: str, value: Any, needle: str
) -> None:
    edit_json(prior_dir / "config.json", lambda meta: set_key(meta, field, value))
    tic = time.perf_counter()
    with pytest.raises(ModelFileError, match=None) as caught:
        Prior.load(prior_dir)
    assert time.perf_counter() - tic < 5
    assert needle in str(caught.value) and str(prior_dir / "model.safetensors") in str(caught.value)
    one_line_error(run("info", prior_dir), needle)
    one_line_error(run("prior", "info", prior_dir), needle)


# --------------------------------------------------------------------------------------------------
# Recipes (CR8, SW3, SW4, UM6)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "train:\n  log_every: 0\n",
            "r.yaml.train.log_every: 0 is outside the allowed range [1, 1000000000]",
        ),
        ("train:\n  validate_every: 0\n", "train.validate_every: 0 is outside"),
        ("train:\n  checkpoint_every: 0\n", "train.checkpoint_every: 0 is outside"),
        ("train:\n  max_steps: -10\n", "train.max_steps: -10 is outside the allowed range [1, 1000000000]"),
        (
            "train:\n  segment_seconds: 0\n",
            "train.segment_seconds: 0.0 is outside the allowed range (0, 600]",
        ),
        ("train:\n  segment_seconds: 1.0e+6\n", "train.segment_seconds: 1000000.0 is outside"),
        ("train:\n  segment_seconds: .nan\n", "train.segment_seconds: nan is outside"),
        ("train:\n  learning_rate: .inf\n", "train.learning_rate: inf is outside the allowed range (0, 10]"),
        ("train:\n  segment_seconds: 0.001\n", "crops of 16 samples, shorter than one token frame"),  # SW3
        (
            "train:\n  num_threads: 100000\n",
            "train.num_threads: 100000 is outside the allowed range [0, 1024]",
        ),
        ("model:\n  encoder:\n    channels: -4\n", "model.encoder.channels: -4 is outside"),
        (
            "loss:\n  stft_fft_sizes: [512, 0]\n",
            "loss.stft_fft_sizes: 0 is outside the allowed range [16, 65536]",
        ),
        ("loss:\n  mel_n_mels: 100000\n", "loss.mel_n_mels: 100000 is outside"),
        ("model:\n", "r.yaml.model: is empty (null)"),  # SW4: silently the default model
        ("model: {}\n", "r.yaml.model: is empty ({})"),
        ("train:\n  max_steps: 10\nloss:\n", "r.yaml.loss: is empty (null)"),
        ("model:\n  quantizer:\n", "r.yaml.model.quantizer: is empty (null)"),
        (
            "model:\n  encoder:\n    strides: [2, 2, 2, 2, 2, 2, 2, 2, 2]\n",
            "9 items, more than the 8 allowed",
        ),
    ],
)
def test_recipe_values_are_range_checked_at_load(tmp_path: Path, text: str, needle: str) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_yaml(recipe, Config)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("prior:\n  num_cycles: 1000000\n", "prior.num_cycles: 1000000 is outside the allowed range [1, 64]"),
        ("train:\n  checkpoint_every: 0\n", "train.checkpoint_every: 0 is outside"),
        ("train:\n  grad_clip: 0\n", "train.grad_clip: 0.0 is outside the allowed range (0, 1e+06]"),
        ("prior:\n", "p.yaml.prior: is empty (null)"),
    ],
)
def test_prior_recipe_values_are_range_checked_at_load(tmp_path: Path, text: str, needle: str) -> None:
    recipe = tmp_path / "p.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError, match=None) as caught:
        load_yaml(recipe, PriorRunConfig)
    assert needle in str(caught.value)


def test_configs_made_in_python_and_overrides_are_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"TrainConfig\.max_steps: 0 is outside"):
        TrainConfig(max_steps=0)
    with pytest.raises(ConfigError, match=r"PriorTrainConfig\.validate_every: 0 is outside"):
        PriorTrainConfig(validate_every=0)
    with pytest.raises(ConfigError, match=r"^train\.log_every: 0 is outside the allowed range"):
        replace_path(Config(), "train.log_every", 0)
    with pytest.raises(ConfigError, match=r"^model\.encoder\.strides: 0 is outside"):
        replace_path(Config(), "model.encoder.strides", [2, 0])


def test_numbers_without_a_dot_read_as_numbers_in_recipes_and_overrides(tmp_path: Path) -> None:
    """``1e-3`` is a string to YAML 1.1 (PyYAML), which made ``--set train.learning_rate=1e-3`` an error."""
    assert parse_override("train.learning_rate=1e-3") == ("train.learning_rate", 1e-3)
    assert parse_override("train.learning_rate=-2E+2")[1] == -200.0
    assert parse_override("train.run_name=1e3x")[1] == "1e3x" and parse_override("a=7")[1] == 7
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  learning_rate: 5e-4\n")
    assert load_yaml(recipe, Config).train.learning_rate == 5e-4


def test_codec_train_with_bad_steps_stops_before_the_run_folder_exists(
    tmp_path: Path, run: Callable[..., RunResult], audio_folder: Path
) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  max_steps: -10\n")
    out = tmp_path / "run"
    one_line_error(
        run("train", recipe, "--data", audio_folder, "--out", out), "train.max_steps: -10 is outside"
    )  # UM6: was "until_step must be between 0 and train.max_steps=-10, got None"
    recipe.write_text("train:\n  max_steps: 5\n")
    one_line_error(
        run("train", recipe, "--data", audio_folder, "--out", out, "--set", "train.log_every=0"),
        "--set train.log_every=0: train.log_every: 0 is outside",
    )  # CR8: ZeroDivisionError after training started
    one_line_error(
        run("train", recipe, "--data", audio_folder, "--out", out, "--threads", 100000),
        "train.num_threads: 100000 is outside the allowed range [0, 1024]",
    )
    assert not out.exists()


def test_prior_train_with_bad_cadence_stops_before_the_run_folder_exists(
    tmp_path: Path, run: Callable[..., RunResult], tokens: Path
) -> None:
    recipe = tmp_path / "p.yaml"
    recipe.write_text("train:\n  checkpoint_every: 0\n")
    out = tmp_path / "prior_run"
    one_line_error(run("prior", "train", tokens, "--out", out, "--config", recipe), "checkpoint_every: 0")
    one_line_error(
        run("prior", "train", tokens, "--out", out, "--set", "train.max_steps=-10"), "train.max_steps: -10"
    )
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# Token metadata (CR6) and codes against the recorded codebook size (UM2)
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def tokens(tmp_path: Path, tiny_tokenizer: Tokenizer) -> Path:
    """A token file of the tiny model: 2 utterances of 5 frames, codes in [0, 16)."""
    path = tmp_path / "tokens" / "t.npy"
    with TokenFileWriter(
        path, num_codebooks=3, codebook_size=16, sample_rate=16000, hop_length=320, model_name="tiny",
        model_hash=tiny_tokenizer.hash, extra_meta={"pitch_rows": 0},
    ) as writer:  # fmt: skip
        for index, utt_id in enumerate(("a", "b")):
            codes = (np.arange(15).reshape(3, 5) + index) % 16
            writer.add(utt_id, f"/audio/{utt_id}.wav", codes, 5 * 320)
    return path


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        (
            "hop_length",
            0,
            "field 'hop_length': 0 is outside the allowed range [1, 65536]",
        ),  # ZeroDivisionError
        ("sample_rate", 0, "field 'sample_rate': 0 is outside the allowed range [1000, 384000]"),
        ("codebook_size", 1, "field 'codebook_size': 1 is outside the allowed range [2, 65536]"),
        ("num_codebooks", 0, "field 'num_codebooks': 0 is outside the allowed range [1, 65]"),
        ("pitch_rows", 7, "field 'pitch_rows': 7 is outside the allowed range [0, 1]"),
        ("pitch_rows", "1", "field 'pitch_rows' must be an integer"),
        ("frame_rate", -50.0, "field 'frame_rate': -50.0 is outside"),
        ("format_version", "x", "format_version must be an integer"),
    ],
)
def test_token_metadata_is_range_checked_on_read(
    tokens: Path, run: Callable[..., RunResult], field: str, value: Any, needle: str
) -> None:
    meta_path = token_paths(tokens).meta_path
    edit_json(meta_path, lambda meta: set_key(meta, field, value))
    with pytest.raises(TokenFileError, match=None) as caught:
        load_tokens(tokens)
    assert needle in str(caught.value) and str(meta_path) in str(caught.value)
    one_line_error(run("info", tokens), needle)


def test_hop_length_zero_is_one_line_in_every_command(
    tokens: Path, prior_dir: Path, run: Callable[..., RunResult], tiny_model_dir: Path
) -> None:
    edit_json(token_paths(tokens).meta_path, lambda meta: set_key(meta, "hop_length", 0))
    needle = "field 'hop_length': 0 is outside the allowed range [1, 65536]"  # was ZeroDivisionError
    one_line_error(run("resynth", tokens, tokens.parent / "wavs", "--model", tiny_model_dir), needle)
    one_line_error(run("prior", "eval", tokens, "--prior", prior_dir), needle)
    one_line_error(run("prior", "train", tokens, "--out", tokens.parent / "prior"), needle)
    assert not (tokens.parent / "wavs").exists() and not (tokens.parent / "prior").exists()


def test_info_usage_names_the_utterance_and_frame_of_a_code_beyond_the_codebook(
    tokens: Path, run: Callable[..., RunResult]
) -> None:
    # codes up to 15 under a recorded codebook size of 8 (the int16 array still fits the recorded size)
    edit_json(token_paths(tokens).meta_path, lambda meta: set_key(meta, "codebook_size", 8))
    one_line_error(run("info", tokens, "--usage"), str(tokens), "utterance 'a'", "frame", "outside [0, 8)")


def test_resynth_refuses_tokens_recorded_for_another_codebook_size(
    tokens: Path, run: Callable[..., RunResult], tiny_model_dir: Path
) -> None:
    # every code (< 16) is valid for 32 codes too: without the check it decoded silently with --force
    edit_json(token_paths(tokens).meta_path, lambda meta: set_key(meta, "codebook_size", 32))
    out = tokens.parent / "wavs"
    one_line_error(
        run("resynth", tokens, out, "--model", tiny_model_dir, "--force"),
        "codes of a 32-code codebook, but model 'tiny' has 16",
    )
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# Run-time options: seconds, chunks, threads (CR10, CR11)
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seconds", ["inf", "1e12", "nan", "-1"])
def test_prior_sample_seconds_beyond_the_limit_is_one_line(
    prior_dir: Path, tmp_path: Path, run: Callable[..., RunResult], seconds: str
) -> None:
    out = tmp_path / "samples"
    one_line_error(
        run("prior", "sample", out, "--prior", prior_dir, "--seconds", seconds, "--tokens-only"),
        "--seconds",
        "allowed range (0, 3600]",
    )
    assert not out.exists()


def test_prior_generate_and_sample_count_are_bounded(prior_dir: Path) -> None:
    prior = Prior.load(prior_dir)
    with pytest.raises(
        ValueError, match=r"n_frames=10000000 is more than the 180000 frames \(3600 s at 50 Hz\)"
    ):
        prior.generate(10_000_000)
    with pytest.raises(ValueError, match=r"num_samples: 100000 is outside the allowed range \[1, 1024\]"):
        prior.generate(5, num_samples=100_000)
    # was "Overflow when unpacking long long"
    with pytest.raises(ValueError, match=r"seed: 1180591620717411303424 is outside"):
        prior.generate(5, seed=2**70)


@pytest.mark.parametrize("chunk", [float("inf"), 1e12, float("nan")])
def test_chunk_seconds_beyond_the_limit_is_refused(tiny_tokenizer: Tokenizer, chunk: float) -> None:
    wav = np.zeros(1600, dtype=np.float32)
    with pytest.raises(ValueError, match="chunk_seconds"):
        tiny_tokenizer.encode(wav, 16000, chunk_seconds=chunk)
    with pytest.raises(ValueError, match="chunk_seconds"):
        tiny_tokenizer.decode(np.zeros((3, 5), dtype=np.int64), chunk_seconds=chunk)


def test_cli_chunk_seconds_inf_is_one_line(
    tmp_path: Path, run: Callable[..., RunResult], audio_folder: Path, tiny_model_dir: Path, tokens: Path
) -> None:
    out = tmp_path / "t.npy"
    needle = "chunk_seconds: inf is outside the allowed range [0.01, 3600]"
    one_line_error(
        run("tokenize", audio_folder, out, "--model", tiny_model_dir, "--chunk-seconds", "inf"), needle
    )
    wavs = tmp_path / "wavs"
    one_line_error(run("resynth", tokens, wavs, "--model", tiny_model_dir, "--chunk-seconds", "inf"), needle)
    assert not out.exists() and not wavs.exists()


def test_absurd_thread_counts_are_one_line(
    tmp_path: Path, run: Callable[..., RunResult], audio_folder: Path, tiny_model_dir: Path
) -> None:
    out = tmp_path / "t.npy"
    one_line_error(
        run("tokenize", audio_folder, out, "--model", tiny_model_dir, "--threads", 100000),
        "--threads: 100000 is outside the allowed range [0, 1024]",
    )
    assert not out.exists()


def test_the_shipped_configs_stay_inside_the_limits() -> None:
    """The embedded models and every recipe load (the limits are far above what they use)."""
    Tokenizer.load()
    Prior.load()
    for recipe in sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml")):
        load_yaml(recipe, PriorRunConfig if recipe.name.startswith("prior") else Config)
