"""The embedded default tokenizer: it loads, round-trips real speech, and refuses damaged files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch

from vqaudio.cli.main import main
from vqaudio.errors import ModelFileError
from vqaudio.losses import mel_distance
from vqaudio.tokenizer import DEFAULT_MODEL_DIR, Tokenizer

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CLIP = EXAMPLES / "sense_and_sensibility_01_austen_64kb-0880.flac"

# Measured on CLIP with the shipped model: mel distance 0.769 with 1 codebook, 0.687 with all 8 (README,
# "The embedded model"). The bound leaves about 15% of margin, so a broken decoder or a mismatched file fails.
MEL_DISTANCE_BOUND = 0.80


@pytest.fixture(scope="module")
def default() -> Tokenizer:
    return Tokenizer.load()


def test_the_embedded_tokenizer_round_trips_a_real_clip(default: Tokenizer) -> None:
    wav, rate = sf.read(CLIP, dtype="float32")
    wav = torch.from_numpy(wav)
    codes = default.encode(wav, rate)
    assert codes.shape == (default.num_codebooks, default.model.num_frames(len(wav)))
    audio = default.decode(codes, num_samples=len(wav))
    assert audio.shape == wav.shape
    distance = float(mel_distance(audio[None], wav[None], default.sample_rate))
    coarse_audio = default.decode(codes[:1], num_samples=len(wav))
    coarse = float(mel_distance(coarse_audio[None], wav[None], default.sample_rate))
    assert distance < MEL_DISTANCE_BOUND
    assert distance < coarse  # more codebooks, closer audio


def test_the_embedded_tokenizer_is_deterministic(default: Tokenizer) -> None:
    wav, rate = sf.read(CLIP, dtype="float32")
    first = default.encode(torch.from_numpy(wav), rate)
    second = Tokenizer.load().encode(torch.from_numpy(wav.copy()), rate)
    assert torch.equal(first, second)


def test_a_modified_or_missing_embedded_model_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "default"
    shutil.copytree(DEFAULT_MODEL_DIR, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit pattern in the last tensor's bytes
    weights.write_bytes(bytes(data))
    monkeypatch.setattr("vqaudio.tokenizer.DEFAULT_MODEL_DIR", copy)
    with pytest.raises(ModelFileError, match="reinstall"):
        Tokenizer.load()
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 1
    assert "model.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "demo" / "tokens.npy").exists()

    weights.unlink()
    with pytest.raises(ModelFileError, match="reinstall"):
        Tokenizer.load()


def test_demo_tokenizes_and_resynthesizes_the_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--out", str(tmp_path)]) == 0
    clips = sorted(EXAMPLES.glob("*.flac"))
    wavs = sorted((tmp_path / "resynth").glob("*.wav"))
    assert [w.stem for w in wavs] == [c.stem for c in clips]
    for clip, wav in zip(clips, wavs, strict=True):
        assert sf.info(wav).frames == sf.info(clip).frames
    out = capsys.readouterr().out
    assert "kbps" in out and "tokens" in out and str(tmp_path / "resynth") in out
