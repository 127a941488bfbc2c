"""Shared test helpers: synthetic speech-like audio and tiny tokenizer models (no training, no data files).

Fixtures (any test file can request them):
    speech            factory ``speech(num_samples, sample_rate=16000, seed=0) -> np.ndarray [T] float32``
    write_audio       factory ``write_audio(path, audio, sample_rate=16000) -> Path`` (WAV/FLAC by extension)
    tiny_config       a ``vqaudio.config.Config`` of a ~6k-parameter waveform model (hop 320, 3 x 16 RVQ)
    tiny_model_dir    (session) that model, calibrated (see ``make_tiny_tokenizer``), saved to a folder
    tiny_tokenizer    a fresh ``Tokenizer`` loaded from ``tiny_model_dir`` (safe to modify)
    other_model_dir   (session) a second tiny model with other weights (same architecture)
    audio_folder      a folder of 6 speech-like files: nested folders, 16/22.05 kHz, mono/stereo, WAV/FLAC

The plain functions ``speech_like``, ``make_tiny_config`` and ``make_tiny_tokenizer`` are importable too
(``from conftest import speech_like``) for parametrised or module-level use.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vqaudio.cli.main import main
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.codec.vqvae import build_model
from vqaudio.config import Config, DecoderConfig, EncoderConfig, ModelConfig, QuantizerConfig

# Tiny models gain nothing from intra-op threads, and on a shared CPU the thread hand-offs make every small
# op slower (measured 6x); one thread also makes float results independent of the machine's core count.
torch.set_num_threads(1)


def speech_like(num_samples: int, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """[T] float32 "speech": harmonics of a gliding pitch, formant-like resonances, syllable envelope, noise.

    Deterministic for a given seed; peak around 0.3, so no clipping when written as 16-bit PCM.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sample_rate
    f0 = 100 + 80 * rng.random()
    pitch = f0 * (1 + 0.15 * np.sin(2 * math.pi * (2 + 2 * rng.random()) * t))
    phase = 2 * math.pi * np.cumsum(pitch) / sample_rate
    # harmonic amplitudes shaped by two moving "formants" (Gaussian bumps in frequency)
    formant1 = 500 + 300 * np.sin(2 * math.pi * 1.3 * t + rng.random() * 6)
    formant2 = 1500 + 600 * np.sin(2 * math.pi * 0.7 * t + rng.random() * 6)
    voiced = np.zeros(num_samples)
    for harmonic in range(1, 30):
        frequency = harmonic * pitch
        gain = np.exp(-(((frequency - formant1) / 200) ** 2)) + 0.5 * np.exp(
            -(((frequency - formant2) / 300) ** 2)
        )
        voiced += gain * np.sin(harmonic * phase) * (frequency < sample_rate / 2)
    syllables = np.clip(np.sin(2 * math.pi * (3 + rng.random()) * t + rng.random() * 6), 0, None) ** 0.5
    noise = rng.standard_normal(num_samples)
    audio = 0.15 * syllables * voiced + 0.01 * noise
    return audio.astype(np.float32)


def make_tiny_config(kind: str = "residual") -> Config:
    """A ~6k-parameter waveform model: strides 2-4-5-8 (hop 320, 50 Hz at 16 kHz), 3 x 16 codes (RVQ)."""
    model = ModelConfig(
        latent_dim=8,
        encoder=EncoderConfig(channels=4, max_channels=8, strides=(2, 4, 5, 8)),
        decoder=DecoderConfig(channels=4, max_channels=8, strides=(8, 5, 4, 2)),
        quantizer=QuantizerConfig(kind=kind, num_codebooks=3 if kind == "residual" else 2, codebook_size=16),
    )
    return Config(model=model)


@torch.no_grad()
def make_tiny_tokenizer(
    seed: int = 0, kind: str = "residual", name: str = "tiny", config: Config | None = None
) -> Tokenizer:
    """An untrained tiny Tokenizer whose codes are well spread (all codes used, few float ties).

    A freshly initialised encoder puts every latent near one common offset, so all codes would be near
    ties. Calibration: shift and scale the last encoder conv so latents are standardised on a few synthetic
    utterances, then one training-mode forward initialises the codebooks by k-means on them.
    """
    config = config or make_tiny_config(kind)
    torch.manual_seed(seed)
    model = build_model(config.model).eval()
    calibration = torch.from_numpy(
        np.stack([speech_like(16000, seed=seed * 100 + index) for index in range(4)])
    )
    latent = model(calibration).latent  # [B, D, F]
    mean, scale = latent.mean(dim=(0, 2)), latent.std(dim=(0, 2)).mean()
    output = model.encoder.output.conv  # z = g * v / ||v|| * h + b  ->  (z - mean) / scale
    output.bias.sub_(mean).div_(scale)
    output.parametrizations.weight.original0.div_(scale)
    model.train()
    model(calibration)  # k-means initialisation of every codebook
    model.eval()
    return Tokenizer(model, config, name=name, training={"steps": 0, "seed": seed, "data": "synthetic"})


@pytest.fixture
def speech() -> Callable[..., np.ndarray]:
    """Factory: ``speech(num_samples, sample_rate=16000, seed=0) -> np.ndarray [T]``."""
    return speech_like


def _write_audio(path: str | Path, audio: np.ndarray, sample_rate: int = 16000) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sample_rate, subtype="PCM_16")
    return path


@pytest.fixture
def write_audio() -> Callable[..., Path]:
    """Factory: ``write_audio(path, audio [T] or [T, C], sample_rate=16000) -> path`` (16-bit PCM)."""
    return _write_audio


@pytest.fixture
def tiny_config() -> Config:
    return make_tiny_config()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny tokenizer (folder with model.safetensors + config.json); do not modify it."""
    folder = tmp_path_factory.mktemp("models") / "tiny"
    make_tiny_tokenizer(seed=0).save(folder)
    return folder


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny tokenizer with the same architecture but other weights (hash mismatch tests)."""
    folder = tmp_path_factory.mktemp("models") / "other"
    make_tiny_tokenizer(seed=1, name="other").save(folder)
    return folder


@pytest.fixture
def tiny_tokenizer(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.load(tiny_model_dir)


@pytest.fixture
def audio_folder(tmp_path: Path) -> Path:
    """Six utterances, 0.2-2.3 s, in nested folders; ids a, b, c, sub/d, sub/e, sub/deeper/f.

    c is 22.05 kHz (resampled on load), d is stereo (downmixed), e is FLAC.
    """
    root = tmp_path / "corpus"
    _write_audio(root / "a.wav", speech_like(16000, seed=1))
    _write_audio(root / "b.wav", speech_like(37000, seed=2))
    _write_audio(root / "c.wav", speech_like(22050, sample_rate=22050, seed=3), sample_rate=22050)
    stereo = np.stack([speech_like(9000, seed=4), speech_like(9000, seed=5)], axis=1)
    _write_audio(root / "sub" / "d.wav", stereo)
    _write_audio(root / "sub" / "e.flac", speech_like(3200, seed=6))
    _write_audio(root / "sub" / "deeper" / "f.wav", speech_like(1234, seed=7))
    return root


RunResult = tuple[int, str, str]  # exit code, stdout, stderr


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., RunResult]:
    """``run("tokenize", ...) -> (exit code, stdout, stderr)`` through ``vqaudio.cli.main.main``."""

    def invoke(*args: object) -> RunResult:
        capsys.readouterr()
        code = main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


def one_line_error(result: RunResult, *needles: str, code: int = 1) -> str:
    """Assert that a CLI run failed with exit ``code`` and one stderr line holding every needle; return it."""
    status, _, err = result
    assert status == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and (code != 1 or lines[0].startswith("error: ")), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def join_cpu_process_group(rank: int, world_size: int, port: int) -> object:
    """In a spawned test process: the environment torchrun would set, one thread, and a gloo group on the CPU;
    returns vqaudio's distributed context."""
    import os

    from vqaudio.training.distributed import init_distributed

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    return init_distributed(torch.device("cpu"))


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest, and steadiest on a shared, loaded CI machine, on one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_phase_tokenizer(phase: str, excitation: str) -> Tokenizer:
    """A tiny tokenizer whose iSTFT head sums phase over frames (``integrated`` phase or a ``harmonic`` excitation):
    what windowed and streamed decoding must carry from window to window."""
    base = make_tiny_config()
    decoder = DecoderConfig(
        output="istft",
        channels=8,
        max_channels=16,
        strides=(2,),
        istft_n_fft=320,
        istft_hop_length=160,
        istft_phase=phase,  # type: ignore[arg-type]
        istft_excitation=excitation,  # type: ignore[arg-type]
    )
    return make_tiny_tokenizer(
        config=dataclasses.replace(base, model=dataclasses.replace(base.model, decoder=decoder))
    )


def write_alignment_folder(folder: Path, manifest_rows: list[str], phone_rows: list[str]) -> Path:
    """A `vqaudio align` folder made by hand: manifest rows (id, path, samples, sample_rate, speaker, text) and
    phone rows (utt_id, start, end, phone, word), tab-separated, headers added; no frame labels."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = ["id\tpath\tsamples\tsample_rate\tspeaker\ttext", *manifest_rows]
    (folder / "manifest.tsv").write_text("\n".join(manifest) + "\n")
    (folder / "phones.tsv").write_text("\n".join(["utt_id\tstart\tend\tphone\tword", *phone_rows]) + "\n")
    (folder / "frames.tsv").write_text("utt_id\tnum_frames\tlabels\n")
    meta = {
        "format": "vqaudio-phone-alignment",
        "format_version": 1,
        "aligner": "by hand",
        "frame_rate": 50.0,
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder
