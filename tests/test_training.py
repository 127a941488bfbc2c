"""Tokenizer training: schedule, crops, checkpoints, exact resume, Ctrl-C, the CLI, DDP, and that it learns.

All audio is synthesised here ("phones": voiced harmonics under moving formants, band-limited noise,
closures), so no data files are needed. Torch runs on one thread (see conftest.py).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import signal
import socket
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import join_cpu_process_group

from vqaudio.cli.main import main
from vqaudio.codec.discriminators import Discriminators, Judgement
from vqaudio.codec.losses import discriminator_loss, feature_matching_loss, generator_adversarial_loss
from vqaudio.codec.pitch import estimate_pitch
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.codec.training import Trainer, train_tokenizer
from vqaudio.codec.validation import hold_out
from vqaudio.codec.vqvae import VQVAE
from vqaudio.config import Config, ConfigError, DiscriminatorConfig, load_yaml, replace_path
from vqaudio.data.augment import Augmentation, perturb, source_samples
from vqaudio.data.corpus import Utterance, fill_headers, load_corpus
from vqaudio.data.crops import RandomCrops
from vqaudio.evaluation.codebook_stats import CodebookUsage
from vqaudio.io.audio import load_audio
from vqaudio.training.checkpoint import (
    CHECKPOINT_FILE,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from vqaudio.training.distributed import shutdown_distributed
from vqaudio.training.logs import read_metrics
from vqaudio.training.schedule import learning_rate_at

RATE = 16000
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


# --------------------------------------------------------------------------------------------------
# Synthetic speech and tiny runs
# --------------------------------------------------------------------------------------------------
def phones(seconds: float, seed: int, sample_rate: int = RATE) -> np.ndarray:
    """[T] float32 speech-like audio: a sequence of 60-220 ms "phones".

    Voiced (60%): harmonics of a gliding f0 (90-210 Hz) under three Gaussian formant bumps that move across
    the phone; fricative (25%): band-limited noise centred at 2.5-6.5 kHz; closure (15%): near silence.
    Every file has its own base pitch (a "speaker"). Unlike a steady vowel, this gives the codebooks many
    distinct frames to encode; aspiration noise and a noise floor keep the log-mel valleys finite, as in
    recordings.
    """
    rng = np.random.default_rng(seed)
    total = int(seconds * sample_rate)
    out = np.zeros(total)
    base_f0 = 90 + 120 * rng.random()
    position = 0
    while position < total:
        length = min(total - position, int(sample_rate * (0.06 + 0.16 * rng.random())))
        t = np.arange(length) / sample_rate
        ramp_in = t / max(t[-1], 1e-3)  # 0 -> 1 over the phone
        kind = rng.choice(3, p=[0.6, 0.25, 0.15])
        if kind == 0:
            f0 = base_f0 * (1 + 0.15 * (rng.random() - 0.5) + 0.3 * (rng.random() - 0.5) * ramp_in)
            phase = 2 * math.pi * np.cumsum(f0) / sample_rate + 6 * rng.random()
            start = np.array([300 + 600 * rng.random(), 900 + 1400 * rng.random(), 2300 + 900 * rng.random()])
            end = start * (1 + 0.3 * (rng.random(3) - 0.5))
            segment = np.zeros(length)
            for harmonic in range(1, int(5000 / f0.max()) + 1):
                gain = 0.02 + sum(
                    np.exp(-0.5 * ((harmonic * f0 - (a + (b - a) * ramp_in)) / width) ** 2) / (1 + j)
                    for j, (a, b, width) in enumerate(zip(start, end, (120, 180, 280), strict=True))
                )
                segment += gain * np.sin(harmonic * phase) / math.sqrt(harmonic)
            # aspiration noise fills the valleys between harmonics, as in real voiced speech
            segment += 0.05 * np.abs(segment).max() * rng.standard_normal(length)
        elif kind == 1:
            spectrum = np.fft.rfft(rng.standard_normal(length))
            frequencies = np.fft.rfftfreq(length, 1 / sample_rate)
            centre, width = 2500 + 4000 * rng.random(), 500 + 2000 * rng.random()
            segment = np.fft.irfft(spectrum * np.exp(-0.5 * ((frequencies - centre) / width) ** 2), length)
        else:
            segment = rng.standard_normal(length)
        edges = np.minimum(1, np.minimum(np.arange(length), np.arange(length)[::-1]) / (0.01 * sample_rate))
        level = 0.05 if kind == 2 else 0.5 + rng.random()
        out[position : position + length] = segment / max(np.abs(segment).max(), 1e-6) * edges * level
        position += length
    out = 0.5 * out / np.abs(out).max() + 1e-3 * rng.standard_normal(total)  # a recording's noise floor
    return out.astype(np.float32)


def write_corpus(folder: Path, count: int, seconds: float = 1.0, sample_rate: int = RATE) -> list[Utterance]:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        sf.write(
            str(folder / f"utt{index:02d}.wav"), phones(seconds, seed=index), sample_rate, subtype="PCM_16"
        )
    return fill_headers(load_corpus(folder), progress=False)


def tiny_training_config(**changes: object) -> Config:
    """recipes/tiny.yaml with 4 x 32 codes, short crops, a short schedule; ``changes``: dotted overrides."""
    config = load_yaml(RECIPES / "tiny.yaml")
    settings: dict[str, object] = {
        "model.quantizer.codebook_size": 32,
        "model.quantizer.dead_code_steps": 20,
        "train.batch_size": 8,
        "train.segment_seconds": 0.25,
        "train.learning_rate": 4e-3,
        "train.warmup_steps": 20,
        "train.max_steps": 400,
        "train.log_every": 10,
        "train.validate_every": 1000,
        "train.checkpoint_every": 1000,
        "train.num_threads": 1,
        **changes,
    }
    for key, value in settings.items():
        config = replace_path(config, key, value)
    return config


# Adversarial training with the smallest discriminators (the loss weights are the recipe's).
TINY_ADVERSARIAL: dict[str, object] = {
    "loss.adversarial_weight": 1.0,
    "loss.feature_matching_weight": 2.0,
    "loss.discriminator.periods": [2, 3],
    "loss.discriminator.period_channels": 4,
    "loss.discriminator.stft_fft_sizes": [128],
    "loss.discriminator.stft_channels": 4,
}


def state_dicts_equal(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors that differ (exactly), or that only one side has."""
    names = set(first) | set(second)
    return sorted(
        n for n in names if n not in first or n not in second or not torch.equal(first[n], second[n])
    )


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Utterance], list[Utterance]]:
    """6 training files of 0.6 s and 1 validation file (for the short runs)."""
    utterances = write_corpus(tmp_path_factory.mktemp("small"), 7, seconds=0.6)
    return utterances[:6], utterances[6:]


# --------------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------------
def test_learning_rate_warms_up_linearly_then_decays_to_the_floor() -> None:
    config = tiny_training_config(**{"train.warmup_steps": 10, "train.max_steps": 110})
    peak, floor = (
        config.train.learning_rate,
        config.train.learning_rate * config.train.min_learning_rate_ratio,
    )
    rates = [learning_rate_at(step, config.train) for step in range(130)]
    assert rates[0] == pytest.approx(peak / 10) and rates[9] == pytest.approx(peak)
    assert all(b > a for a, b in zip(rates[:10], rates[1:10], strict=False))
    assert rates[10] == pytest.approx(peak) and rates[60] == pytest.approx((peak + floor) / 2)
    assert all(b <= a for a, b in zip(rates[10:], rates[11:], strict=False))
    assert rates[110] == pytest.approx(floor) and rates[129] == pytest.approx(floor)
    constant = replace_path(config, "train.lr_decay", "none")
    assert learning_rate_at(100, constant.train) == pytest.approx(peak)


def test_random_crops_depend_only_on_seed_rank_and_step(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    utterances = write_corpus(folder, 3, seconds=0.5)
    sf.write(str(folder / "short.wav"), phones(0.1, seed=9), RATE)
    sf.write(str(folder / "rate8k.wav"), phones(0.5, seed=8, sample_rate=8000), 8000)
    utterances = fill_headers(load_corpus(folder), progress=False)
    segment = RATE // 4

    def crops(**options: object) -> RandomCrops:
        settings: dict = {
            "sample_rate": RATE,
            "segment_samples": segment,
            "batch_size": 16,
            "seed": 3,
            **options,
        }
        return RandomCrops(utterances, **settings)

    windowed, cached = crops(), crops(cache=True)
    batch = windowed[5]
    assert batch.shape == (16, segment) and batch.dtype == torch.float32
    assert torch.equal(batch, windowed[5])  # no hidden sampler state
    assert not torch.equal(batch, windowed[6]) and not torch.equal(batch, crops(rank=1)[5])
    # Windowed decoding (a slice of the file, resampled when needed) matches the decoded-once cache.
    ids = [utterances[index].id for index, _ in windowed.choose(5)]
    for row, utterance_id in enumerate(ids):
        tolerance = 1e-2 if utterance_id == "rate8k" else 1e-4  # resampling a slice vs the whole file
        assert torch.allclose(cached[5][row], batch[row], atol=tolerance), utterance_id
    assert "rate8k" in ids
    # short.wav (0.1 s) is used whole and zero-padded
    assert windowed.num_short == 1
    with_short = [
        (step, row)
        for step in range(20)
        for row, (index, _) in enumerate(windowed.choose(step))
        if utterances[index].id == "short"
    ]
    assert with_short
    for step, row in with_short[:3]:
        crop = windowed[step][row]
        assert crop[: RATE // 10].abs().max() > 0 and crop[RATE // 10 :].abs().max() == 0
    # A DataLoader with a worker process gives the same batches (the crops' randomness is per step).
    loader = torch.utils.data.DataLoader(windowed, batch_size=None, sampler=range(5, 7), num_workers=1)
    assert all(torch.equal(got, windowed[step]) for got, step in zip(loader, (5, 6), strict=True))


def test_speed_perturbation_scales_pitch_and_gain_scales_level() -> None:
    segment = RATE // 4
    tone = (0.5 * np.sin(2 * np.pi * 500 * np.arange(RATE) / RATE)).astype(np.float32)

    def peak_hz(audio: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)), n=8 * len(audio)))
        return float(np.argmax(spectrum)) * RATE / (8 * len(audio))

    for speed in (0.9, 1.0, 1.15):
        crop = perturb(tone[: source_samples(segment, speed)], segment, speed, 0.0)
        assert crop.shape == (segment,) and crop.dtype == np.float32
        assert peak_hz(crop) == pytest.approx(500 * speed, abs=3)
    quieter = perturb(tone[: source_samples(segment, 1.0)], segment, 1.0, -6.0)
    assert np.abs(quieter).max() == pytest.approx(0.5 * 10 ** (-6 / 20), rel=1e-3)
    louder = perturb(tone[: source_samples(segment, 1.0)], segment, 1.0, 20.0)
    assert 0.99 < np.abs(louder).max() <= 0.999  # a gain that would clip is lowered to full scale
    with pytest.raises(ValueError, match="speed_perturbation"):
        Augmentation(speed=(1.2, 0.8))
    with pytest.raises(ValueError, match="gain_perturbation_db"):
        Augmentation(gain_db=(6.0, -6.0))


def test_augmented_crops_keep_the_utterance_choice_and_are_reproducible(tmp_path: Path) -> None:
    utterances = write_corpus(tmp_path / "corpus", 4, seconds=1.0)
    segment = RATE // 4
    settings: dict = {"sample_rate": RATE, "segment_samples": segment, "batch_size": 8, "seed": 3}
    plain = RandomCrops(utterances, **settings)
    augmentation = Augmentation(speed=(0.85, 1.15), gain_db=(-10.0, 0.0))
    augmented = RandomCrops(utterances, **settings, augmentation=augmentation)
    cached = RandomCrops(utterances, **settings, augmentation=augmentation, cache=True)
    assert [index for index, _ in augmented.choose(4)] == [index for index, _ in plain.choose(4)]
    batch = augmented[4]
    assert batch.shape == (8, segment) and torch.equal(batch, augmented[4])
    assert torch.allclose(batch, cached[4], atol=1e-3)  # reading a window of the file or the cache
    assert not torch.allclose(batch, plain[4], atol=1e-2)
    # Gains in [-10, 0] dB only lower the level.
    assert (batch.pow(2).mean(dim=1) <= plain[4].pow(2).mean(dim=1) * 1.3).all()
    assert augmented.state()["speed"] == [0.85, 1.15] and "speed" not in plain.state()
    # Augmentation off (the defaults) is no augmentation at all.
    off = RandomCrops(utterances, **settings, augmentation=Augmentation())
    assert off.augmentation is None and torch.equal(off[4], plain[4])


def test_hold_out_is_deterministic_and_keeps_training_data() -> None:
    utterances = [Utterance(f"u{index}", Path(f"u{index}.wav"), 16000, RATE) for index in range(10)]
    train, valid = hold_out(utterances, 3, seed=0)
    assert len(valid) == 3 and len(train) == 7 and not {u.id for u in train} & {u.id for u in valid}
    assert hold_out(utterances, 3, seed=0) == (train, valid)
    assert hold_out(utterances, 3, seed=1) != (train, valid)
    assert hold_out(utterances[:1], 3, seed=0) == (utterances[:1], [])  # a single file is never held out


def test_codebook_usage_and_perplexity() -> None:
    usage = CodebookUsage(num_codebooks=2, codebook_size=4)
    usage.update(torch.tensor([[[0, 1, 2, 3], [0, 0, 0, 0]]]))  # [B=1, K=2, F=4]
    summary = usage.summary()
    assert summary.usage.tolist() == [1.0, 0.25] and summary.frames == 4
    assert summary.perplexity.tolist() == pytest.approx([4.0, 1.0])
    usage.reset()
    assert usage.summary().usage.tolist() == [0.0, 0.0]


def test_checkpoint_round_trip_with_weights_only(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    np.random.seed(1)
    states = rng_states()
    expected = (torch.rand(3), np.random.rand(3), __import__("random").random())
    path = save_checkpoint(
        tmp_path / CHECKPOINT_FILE,
        {
            "step": 7,
            "config": {"train": {"seed": 0}},
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": {"step": 7},
            "rng": states,
            "sampler": {"seed": 0, "step": 7},
            "run": {"data": "somewhere"},
            "validation": {},
        },
    )
    raw = torch.load(path, weights_only=True)  # plain data only: nothing in the file can run code
    assert raw["step"] == 7 and raw["format"] == "vqaudio-training-state"
    loaded = load_checkpoint(path)
    restore_rng_states(loaded["rng"])
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
    assert __import__("random").random() == expected[2]
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temporary file left


# --------------------------------------------------------------------------------------------------
# Training runs
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_training_cuts_the_mel_distance_and_uses_the_codebooks(tmp_path: Path) -> None:
    """400 steps of 8 x 0.25 s crops from 10 s of synthetic speech by 20 "speakers" (about 20 s on one core);
    4 other speakers held out. The held-out mel distance falls to about half its start (0.50-0.53 measured;
    float rounding differs between CPUs' instruction sets); the bound asks for at least a 40% cut."""
    utterances = write_corpus(tmp_path / "corpus", 24, seconds=0.5)
    train, valid = utterances[:20], utterances[20:]
    result = train_tokenizer(tiny_training_config(), train, valid, tmp_path / "run", progress=False)

    validations = [row for row in read_metrics(tmp_path / "run" / "metrics.jsonl") if row["kind"] == "valid"]
    before, after = validations[0], validations[-1]
    assert (before["step"], after["step"], result.step) == (0, 400, 400)
    tokenizer = Tokenizer.load(tmp_path / "run")
    usage = CodebookUsage(tokenizer.num_codebooks, tokenizer.codebook_size)
    for utterance in train:
        usage.update(tokenizer.model.encode(load_audio(utterance.path, RATE)[None]))
    train_usage = usage.summary().usage.tolist()
    print(
        f"\nheld-out mel distance {before['mel_distance']:.3f} -> {after['mel_distance']:.3f} "
        f"(ratio {after['mel_distance'] / before['mel_distance']:.2f}) after {result.step} steps; "
        f"codebook usage on the 10 s of training audio {[round(u, 2) for u in train_usage]}, on the 2 s "
        f"held out {[round(u, 2) for u in after['codebook_usage']]} (of {tokenizer.codebook_size} codes); "
        f"{result.audio_seconds_per_second:.1f} s of audio trained per second"
    )
    assert after["mel_distance"] <= 0.6 * before["mel_distance"]
    assert min(train_usage) > 0.5
    assert tokenizer.training["steps"] == 400 and tokenizer.training["validation"]["step"] == 400


def test_envelope_loss_is_trained_on_and_needs_crops_of_one_segment(
    tmp_path: Path, small_corpus: tuple[list[Utterance], list[Utterance]]
) -> None:
    train, valid = small_corpus
    too_short = tiny_training_config(**{"loss.envelope_weight": 1.0})  # 0.25 s crops
    with pytest.raises(ConfigError, match="train.segment_seconds=0.25"):
        train_tokenizer(too_short, train, valid, tmp_path / "short", progress=False)
    config = tiny_training_config(
        **{
            "loss.envelope_weight": 1.0,
            "train.segment_seconds": 0.5,
            "train.max_steps": 4,
            "train.log_every": 2,
        }
    )
    train_tokenizer(config, train, valid, tmp_path / "run", progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    logged = [row["envelope"] for row in rows if row["kind"] == "train"]
    assert len(logged) == 2 and all(0 < value < 2 for value in logged)
    assert all(0 < row["envelope"] < 2 for row in rows if row["kind"] == "valid")


@pytest.mark.parametrize("adversarial", [False, True], ids=["reconstruction", "adversarial"])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(
    tmp_path: Path, small_corpus: tuple[list[Utterance], list[Utterance]], adversarial: bool
) -> None:
    train, valid = small_corpus
    # dead_code_steps=3: code restarts (random draws) happen on both sides of the interruption
    config = tiny_training_config(
        **{"train.max_steps": 12, "train.log_every": 2, "model.quantizer.dead_code_steps": 3},
        **(TINY_ADVERSARIAL if adversarial else {}),
    )
    straight = train_tokenizer(config, train, valid, tmp_path / "straight", progress=False)
    first = train_tokenizer(config, train, valid, tmp_path / "resumed", until_step=6, progress=False)
    assert first.step == 6 and load_checkpoint(tmp_path / "resumed" / CHECKPOINT_FILE)["step"] == 6
    second = train_tokenizer(config, train, valid, tmp_path / "resumed", progress=False)
    assert (second.start_step, second.step, straight.step) == (6, 12, 12)

    a = load_checkpoint(tmp_path / "straight" / CHECKPOINT_FILE)
    b = load_checkpoint(tmp_path / "resumed" / CHECKPOINT_FILE)
    assert state_dicts_equal(a["model"], b["model"]) == []
    moments_a, moments_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(moments_a[k]["exp_avg_sq"], moments_b[k]["exp_avg_sq"]) for k in moments_a)
    if adversarial:  # the discriminators and their optimizer resume too
        assert state_dicts_equal(a["discriminators"]["model"], b["discriminators"]["model"]) == []
        assert (
            a["discriminators"]["optimizer"]["state"].keys()
            == b["discriminators"]["optimizer"]["state"].keys()
        )
    else:
        assert "discriminators" not in a
    # The logs read like one run: the same training rows, without duplicates.
    rows = [read_metrics(tmp_path / name / "metrics.jsonl") for name in ("straight", "resumed")]
    losses = [[(r["step"], r["loss"]) for r in run if r["kind"] == "train"] for run in rows]
    assert losses[0] == losses[1] and [s for s, _ in losses[0]] == [2, 4, 6, 8, 10, 12]


def test_resuming_with_another_number_of_processes_says_the_total_batch_changed(
    tmp_path: Path, small_corpus: tuple[list[Utterance], list[Utterance]], caplog: pytest.LogCaptureFixture
) -> None:
    train, valid = small_corpus
    config = tiny_training_config(**{"train.max_steps": 2, "train.batch_size": 2})
    train_tokenizer(config, train, valid, tmp_path / "run", until_step=1, progress=False)
    checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)
    checkpoint["run"]["world_size"] = 4  # as if written by a 4-process run
    save_checkpoint(tmp_path / "run" / CHECKPOINT_FILE, checkpoint)
    with caplog.at_level(logging.WARNING):
        train_tokenizer(config, train, valid, tmp_path / "run", progress=False)
    warnings = [r.getMessage() for r in caplog.records if "trained with 4" in r.getMessage()]
    assert len(warnings) == 1 and "trains 1 x 2 crops instead of 4 x 2" in warnings[0], warnings


@pytest.mark.parametrize("how", ["signal", "exception"])
def test_ctrl_c_writes_a_checkpoint_and_no_partial_files(
    tmp_path: Path,
    small_corpus: tuple[list[Utterance], list[Utterance]],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    """First Ctrl-C (SIGINT): the step finishes, then a checkpoint. A KeyboardInterrupt raised inside a step
    (second Ctrl-C): a checkpoint of the last finished step."""
    train, valid = small_corpus
    config = tiny_training_config(**{"train.max_steps": 8, "train.checkpoint_every": 2})
    original = Trainer.train_step
    calls = []

    def interrupted_step(
        self: Trainer, batch: torch.Tensor, phone_labels: torch.Tensor | None = None
    ) -> object:
        calls.append(self.step)
        if len(calls) == 3 and how == "exception":
            raise KeyboardInterrupt
        result = original(self, batch, phone_labels)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_tokenizer(config, train, valid, out, progress=False)
    expected_step = 3 if how == "signal" else 2
    assert load_checkpoint(out / CHECKPOINT_FILE)["step"] == expected_step
    assert Tokenizer.load(out).training["steps"] == expected_step
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [CHECKPOINT_FILE, "config.json", "metrics.jsonl", "model.safetensors", "tensorboard"]
    )  # no temporary (".name.XXXX") files
    monkeypatch.setattr(Trainer, "train_step", original)
    assert train_tokenizer(config, train, valid, out, progress=False).step == 8


# --------------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------------
def test_cli_trains_resumes_and_refuses_another_architecture(
    tmp_path: Path, small_corpus: tuple[list[Utterance], list[Utterance]], capsys: pytest.CaptureFixture[str]
) -> None:
    data = small_corpus[0][0].path.parent
    out = tmp_path / "run"
    args = ["train", str(RECIPES / "tiny.yaml"), "--data", str(data), "--out", str(out), "--no-progress"]
    args += [
        "--max-steps",
        "6",
        "--threads",
        "1",
        "--set",
        "train.checkpoint_every=4",
        "--set",
        "train.batch_size=2",
    ]
    assert main(args) == 0
    for name in ("model.safetensors", "config.json", "metrics.jsonl", CHECKPOINT_FILE):
        assert (out / name).is_file(), name
    assert any((out / "tensorboard").iterdir())
    tokenizer = Tokenizer.load(out)
    meta = tokenizer.training
    assert meta["steps"] == 6 and meta["complete"] and meta["recipe"].endswith("tiny.yaml")
    assert meta["data"]["source"] == str(data) and meta["data"]["utterances"] == 5  # 2 of 7 held out
    assert meta["valid"]["utterances"] == 2 and meta["validation"]["step"] == 6
    assert tokenizer.config.train.max_steps == 6 and tokenizer.config.train.batch_size == 2
    rows = read_metrics(out / "metrics.jsonl")
    assert {row["kind"] for row in rows} == {"train", "valid"}
    assert all(len(row["codebook_usage"]) == 4 for row in rows)
    codes = tokenizer.encode(torch.from_numpy(phones(0.5, seed=1)), RATE)
    assert codes.shape == (4, 25)

    # The same command again resumes (nothing left to do); more steps continue the run.
    assert main(args) == 0
    assert main([*args, "--max-steps", "8"]) == 0
    assert Tokenizer.load(out).training["steps"] == 8
    capsys.readouterr()
    # Another architecture in the same folder, or starting over, needs --overwrite.
    assert main([*args, "--set", "model.latent_dim=16"]) == 1
    assert "another architecture" in capsys.readouterr().err
    assert main([*args, "--no-resume"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--no-resume", "--overwrite", "--max-steps", "2"]) == 0
    assert Tokenizer.load(out).training["steps"] == 2
    assert [row["step"] for row in read_metrics(out / "metrics.jsonl") if row["kind"] == "valid"] == [0, 2]


@pytest.mark.parametrize(
    "recipe_text, message",
    [
        ("train:\n  batch_sise: 4\n", "unknown key(s) ['batch_sise']"),
        ("train:\n  batch_size: four\n", "train.batch_size: expected an integer"),
    ],
)
def test_cli_rejects_a_bad_recipe_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], recipe_text: str, message: str
) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(recipe_text)
    (tmp_path / "data").mkdir()
    args = ["train", str(recipe), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("error:") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_rejects_an_unknown_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", str(RECIPES / "tiny.yaml"), "--data", str(tmp_path), "--out", str(tmp_path / "out")]
    assert main([*args, "--set", "train.max_stpes=3"]) == 1
    assert "--set train.max_stpes=3: no config field" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Data parallel
# --------------------------------------------------------------------------------------------------
def _ddp_worker(rank: int, world_size: int, port: int, folder: str, paths: Sequence[str]) -> None:
    context = join_cpu_process_group(rank, world_size, port)
    utterances = fill_headers([Utterance(Path(p).stem, Path(p), None, None) for p in paths], progress=False)
    settings = {"train.max_steps": 6, "train.batch_size": 2, "model.quantizer.dead_code_steps": 2}
    config = tiny_training_config(**settings, **{"train.num_workers": 1, "train.validate_every": 3})
    trainer = Trainer(
        config, utterances[:-3], utterances[-3:], Path(folder) / "run", context=context, progress=False
    )
    # Each rank decodes its own share of the validation files only.
    torch.save(sorted(trainer.validation_set.audio), Path(folder) / f"valid{rank}.pt")
    trainer.fit()
    torch.save(trainer.validation, Path(folder) / f"metrics{rank}.pt")
    torch.save(trainer.model.state_dict(), Path(folder) / f"rank{rank}.pt")
    # Both ranks saw different crops: the identical weights below come from gradient averaging, not chance.
    torch.save(trainer.crops[0], Path(folder) / f"batch{rank}.pt")
    trainer.close()
    shutdown_distributed()


@pytest.mark.slow
def test_two_process_ddp_with_loader_workers_keeps_replicas_identical(
    tmp_path: Path, small_corpus: tuple[list[Utterance], list[Utterance]]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    paths = [str(u.path) for u in (*small_corpus[0], *small_corpus[1])]
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(tmp_path), paths), nprocs=2, join=True)
    replicas = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert state_dicts_equal(*replicas) == []
    assert not torch.equal(*(torch.load(tmp_path / f"batch{rank}.pt") for rank in (0, 1)))
    shares = [torch.load(tmp_path / f"valid{rank}.pt") for rank in (0, 1)]
    assert shares[0] and shares[1] and sorted(shares[0] + shares[1]) == [0, 1, 2]
    metrics = [torch.load(tmp_path / f"metrics{rank}.pt") for rank in (0, 1)]  # all-reduced: the same
    assert metrics[0] == metrics[1] and metrics[0]["step"] == 6 and metrics[0]["num_utterances"] == 3
    checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)  # written by rank 0 only
    assert checkpoint["step"] == 6 and checkpoint["run"]["world_size"] == 2
    assert state_dicts_equal(checkpoint["model"], replicas[0]) == []
    released = Tokenizer.load(tmp_path / "run").model.release_state_dict()  # no training statistics
    assert state_dicts_equal(released, {name: replicas[0][name] for name in released}) == []
    assert json.loads((tmp_path / "run" / "config.json").read_text())["training"]["world_size"] == 2


# --------------------------------------------------------------------------------------------------
# Adversarial training and fine-tuning
# --------------------------------------------------------------------------------------------------
def test_adversarial_losses_vanish_exactly_where_they_should() -> None:
    real_logits, fake_logits = torch.ones(2, 5), torch.zeros(2, 5)
    features = [torch.randn(2, 3, 4), torch.randn(2, 6)]
    real = [Judgement(real_logits, features)]
    fake = [Judgement(fake_logits, [f + 1 for f in features])]
    assert float(discriminator_loss(real, fake)) == 0.0  # a perfect discriminator
    assert float(generator_adversarial_loss(real)) == 0.0  # a decoder that fools it
    assert float(generator_adversarial_loss(fake)) == pytest.approx(1.0)
    assert float(feature_matching_loss(real, real)) == 0.0
    expected = np.mean([1 / f.abs().mean().item() for f in features])  # |real - fake| = 1 everywhere
    assert float(feature_matching_loss(real, fake)) == pytest.approx(expected, rel=1e-5)


def test_discriminators_learn_to_tell_speech_from_its_blurred_copy() -> None:
    """A few updates separate real audio from a copy with its fine structure smeared (what a decoder trained
    on spectral losses alone produces): the least-squares loss drops well below its starting value."""
    torch.manual_seed(0)
    config = DiscriminatorConfig(periods=(2, 3, 5), period_channels=8, stft_fft_sizes=(256,), stft_channels=8)
    discriminators = Discriminators(config)
    real = torch.from_numpy(np.stack([phones(0.5, seed=s) for s in range(4)])).float()
    # Same short-time magnitudes, random phases: the smearing of a blurred decoder, exaggerated.
    window = torch.hann_window(256)
    spectrum = torch.stft(real, 256, 64, window=window, return_complex=True)
    random_phase = torch.exp(
        2j * math.pi * torch.rand(spectrum.shape, generator=torch.Generator().manual_seed(0))
    )
    fake = torch.istft(spectrum.abs() * random_phase, 256, 64, window=window, length=real.shape[-1])
    optimizer = torch.optim.Adam(discriminators.parameters(), lr=2e-3, betas=(0.8, 0.99))
    losses = []
    for _ in range(60):
        optimizer.zero_grad()
        loss = discriminator_loss(discriminators(real), discriminators(fake))
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    # Measured: 0.91 -> 0.33 (ratio 0.36); a discriminator that cannot tell them apart stays at 0.5.
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses[::5]
    judged = discriminators(torch.randn(3, 1001))  # any length
    assert len(judged) == 4 and all(j.logits.shape[0] == 3 and j.features for j in judged)


def test_fine_tuning_starts_from_the_given_model_and_checks_its_architecture(
    tmp_path: Path, small_corpus: tuple[list[Utterance], list[Utterance]]
) -> None:
    train, valid = small_corpus
    config = tiny_training_config(**{"train.max_steps": 4})
    train_tokenizer(config, train, valid, tmp_path / "source", progress=False)
    source = Tokenizer.load(tmp_path / "source")

    tuned = tiny_training_config(**{"train.max_steps": 2}, **TINY_ADVERSARIAL)
    trainer = Trainer(tuned, train, valid, tmp_path / "tuned", init_from=tmp_path / "source", progress=False)
    try:
        # The released weights, with the quantizers' EMA statistics restarted from their codebooks.
        assert state_dicts_equal(trainer.model.state_dict(), source.model.state_dict()) == []
        trainer.fit()
    finally:
        trainer.close()
    record = Tokenizer.load(tmp_path / "tuned").training
    assert record["steps"] == 2 and record["init_from"]["weights_sha256"] == source.hash
    # Resumed (no --init-from this time), the run still names the model it started from.
    train_tokenizer(
        replace_path(tuned, "train.max_steps", 3), train, valid, tmp_path / "tuned", progress=False
    )
    record = Tokenizer.load(tmp_path / "tuned").training
    assert record["steps"] == 3 and record["init_from"]["weights_sha256"] == source.hash

    wider = replace_path(tuned, "model.quantizer.codebook_size", 64)
    with pytest.raises(ConfigError, match="architecture differs"):
        Trainer(wider, train, valid, tmp_path / "other", init_from=tmp_path / "source", progress=False)
    # How codebooks train may change; the weights still load.
    rebalanced = replace_path(tuned, "model.quantizer.usage_entropy_weight", 0.1)
    trainer = Trainer(
        rebalanced, train, valid, tmp_path / "rebalanced", init_from=tmp_path / "source", progress=False
    )
    try:
        assert state_dicts_equal(trainer.model.state_dict(), source.model.state_dict()) == []
    finally:
        trainer.close()


def pitch_error(model: VQVAE, wav: torch.Tensor) -> float:
    """Mean |log F0 error| of a harmonic-excitation model's F0 head on the voiced frames of ``wav`` [1, T]."""
    head = model.decoder.head
    with torch.no_grad():
        log_f0 = model.eval()(wav).log_f0
        assert log_f0 is not None
        padded = torch.nn.functional.pad(wav, (0, log_f0.shape[-1] * head.hop_length - wav.shape[-1]))
        reference = estimate_pitch(head.frames(padded), RATE)
    return float((log_f0 - reference.f0.log())[reference.voiced].abs().mean())


def test_harmonic_fine_tuning_keeps_the_tokens_and_learns_the_pitch(
    tmp_path: Path, small_corpus: tuple[list[Utterance], list[Utterance]]
) -> None:
    """recipes/rvq_mel_harmonic.yaml's settings on a tiny model: the harmonic head starts as the source's
    output, the frozen encoder and codebooks do not move (the tokens stay the same), and the F0 head learns:
    its F0 error on a clip it never saw falls by a fifth."""
    train, valid = small_corpus
    train_tokenizer(
        tiny_training_config(**{"train.max_steps": 30}), train, valid, tmp_path / "source", progress=False
    )
    source = Tokenizer.load(tmp_path / "source")
    harmonic = tiny_training_config(
        **{
            "model.decoder.istft_excitation": "harmonic",
            "loss.pitch_weight": 1.0,
            "train.freeze": ["encoder", "quantizer"],
            "train.max_steps": 80,
        }
    )
    wav = torch.from_numpy(phones(1.0, seed=99))[None]
    trainer = Trainer(
        harmonic, train, valid, tmp_path / "tuned", init_from=tmp_path / "source", progress=False
    )
    source_as_harmonic = copy.deepcopy(trainer.model).eval()
    try:
        with torch.no_grad():
            source.model.eval(), trainer.model.eval()
            torch.testing.assert_close(trainer.model(wav).audio, source.model(wav).audio, rtol=0, atol=0)
        trainer.fit()
    finally:
        trainer.close()
    tuned = Tokenizer.load(tmp_path / "tuned")
    frozen = [name for name in source.model.state_dict() if name.startswith(("encoder.", "quantizer."))]
    changed = state_dicts_equal(
        {n: tuned.model.state_dict()[n] for n in frozen}, {n: source.model.state_dict()[n] for n in frozen}
    )
    assert changed == []
    assert torch.equal(tuned.encode(wav[0], RATE), source.encode(wav[0], RATE))
    assert not torch.equal(
        tuned.model.decoder.head.projection.conv.bias, source.model.decoder.head.projection.conv.bias
    )
    before, after = pitch_error(source_as_harmonic, wav), pitch_error(tuned.model, wav)
    assert after < 0.8 * before, (before, after)
    with pytest.raises(ConfigError, match="removed"):
        Trainer(
            tiny_training_config(),
            train,
            valid,
            tmp_path / "back",
            init_from=tmp_path / "tuned",
            progress=False,
        )


def test_cli_init_from_default_is_the_embedded_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--init-from default` loads the embedded tokenizer (whose architecture is not tiny.yaml's: refused, named)."""
    write_corpus(tmp_path / "audio", 2)
    args = [
        "train",
        str(RECIPES / "tiny.yaml"),
        "--data",
        str(tmp_path / "audio"),
        "--out",
        str(tmp_path / "run"),
    ]
    assert main([*args, "--init-from", "default", "--max-steps", "1", "--no-progress"]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--init-from default: its architecture differs from the recipe's" in error, error
