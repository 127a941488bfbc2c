"""Held first codes (``ResidualVQ.held_first_codes``, ``Tokenizer.first_codebook_hold``, ``--hold``; issue 26).

The rule, checked by brute force: frame t keeps code_{t-1} exactly when the error of the whole stack with it is
within (1 + hold) of the error with its own first code; otherwise it takes its own. Invariants: hold 0 is the plain
encode, held runs are never more than the plain ones, n_q encodes are prefixes, a stream's state continues an input
exactly, windows and files give the codes of a whole input, held codes decode, and token files record the margin.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RunResult, make_tiny_config, make_tiny_tokenizer, speech_like

from vqaudio.codec.corpus_coding import tokenize_corpus
from vqaudio.codec.quantization import CodebookOptions, ResidualVQ
from vqaudio.codec.quantization.residual import HOLD_LAGS
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.config import ConfigError, QuantizerConfig
from vqaudio.errors import InputError
from vqaudio.io.audio import load_audio
from vqaudio.io.token_file import load_tokens

HOLDS = [0.0, 0.3, 1.0, 4.0]


def load_wav(path: Path) -> np.ndarray:
    return load_audio(path, 16000).numpy()


def smooth_latents(batch: int = 3, dim: int = 8, frames: int = 60, seed: int = 0) -> torch.Tensor:
    """[B, D, F] latents that drift from frame to frame (a random walk), as an encoder's do."""
    steps = torch.randn(batch, dim, frames, generator=torch.Generator().manual_seed(seed))
    return 0.4 * steps.cumsum(dim=-1) + 0.3 * steps


def trained_rvq(kind: str = "vq", seed: int = 0) -> ResidualVQ:
    """A 3-stage RVQ of 16 codes whose codebooks were initialised on latents like ``smooth_latents``'s."""
    torch.manual_seed(seed)
    options = CodebookOptions(codebook=kind, codebook_size=16, fsq_levels=(4, 4))  # type: ignore[arg-type]
    rvq = ResidualVQ(8, 3, options, quantizer_dropout=0.0)
    rvq.train()
    with torch.no_grad():
        rvq(
            smooth_latents(batch=8, frames=100, seed=seed + 100)
        )  # k-means (vq) or the input maps (gumbel, fsq)
    return rvq.eval()


def runs(codes: torch.Tensor) -> torch.Tensor:
    """[B, F] -> [B] runs of identical consecutive codes."""
    return 1 + (codes[:, 1:] != codes[:, :-1]).sum(dim=1)


def stack_error(rvq: ResidualVQ, frame: torch.Tensor, first: int) -> float:
    """Brute force: ||z - q||^2 of one frame [D] whose first code is ``first``, later stages by exhaustive
    nearest-code search in float64."""
    vectors = rvq.latent_codebooks().double()  # [K, C, D]
    residual = frame.double() - vectors[0, first]
    for stage in range(1, rvq.num_codebooks):
        distances = (residual[None] - vectors[stage]).pow(2).sum(dim=1)  # [C]
        residual = residual - vectors[stage, int(distances.argmin())]
    return float(residual.pow(2).sum())


# --------------------------------------------------------------------------------------------------
# The rule
# --------------------------------------------------------------------------------------------------
def longest_run(codes: torch.Tensor) -> int:
    """The longest run of identical consecutive codes in any row of [B, F]."""
    longest = 0
    for row in codes.tolist():
        length = 1
        for before, code in zip(row, row[1:], strict=False):
            length = length + 1 if code == before else 1
            longest = max(longest, length)
    return longest


@pytest.mark.parametrize("previous", [False, True], ids=["fresh", "continued"])
@pytest.mark.parametrize("hold", HOLDS[1:])
def test_held_codes_follow_the_rule_by_brute_force(hold: float, previous: bool) -> None:
    rvq = trained_rvq()
    z = smooth_latents(batch=3, frames=80)
    before = torch.tensor([3, 7, 11]) if previous else None
    held = rvq.held_first_codes(z, hold, before)  # [B, F]
    best = rvq.encode(z, n_q=1)[:, 0]
    kept = 0
    for b in range(z.shape[0]):
        for t in range(z.shape[-1]):
            if t == 0 and before is None:
                assert held[b, 0] == best[b, 0]  # no frame before: its own code
                continue
            candidate, own = int(held[b, t - 1] if t else before[b]), int(best[b, t])  # type: ignore[index]
            if candidate == own:
                assert held[b, t] == own
                continue
            limit = (1 + hold) * stack_error(rvq, z[b, :, t], own)
            keeps = stack_error(rvq, z[b, :, t], candidate) <= limit
            assert int(held[b, t]) == (candidate if keeps else own), (b, t)
            kept += keeps
    assert kept > 0  # the margin was exercised
    if hold == HOLDS[-1]:  # runs older than the lags computed for every frame at once were exercised too
        assert longest_run(held) > HOLD_LAGS + 1


def test_hold_zero_is_the_plain_encode() -> None:
    rvq = trained_rvq()
    z = smooth_latents(seed=1)
    assert torch.equal(rvq.encode(z, hold=0.0), rvq.encode(z))
    assert torch.equal(rvq.encode(z, n_q=2, hold=0.0), rvq.encode(z, n_q=2))


@pytest.mark.parametrize("kind", ["vq", "gumbel", "fsq"])
def test_held_runs_are_never_more_than_plain_ones(kind: str) -> None:
    rvq = trained_rvq(kind)
    z = smooth_latents(batch=4, frames=80, seed=2)
    plain = runs(rvq.encode(z)[:, 0])
    for hold in HOLDS[1:]:
        assert (runs(rvq.encode(z, hold=hold)[:, 0]) <= plain).all(), hold
    assert runs(rvq.encode(z, hold=HOLDS[-1])[:, 0]).sum() < plain.sum()  # a large margin holds


@pytest.mark.parametrize("hold", HOLDS[1:])
def test_held_encodes_are_prefixes_and_decode(hold: float) -> None:
    rvq = trained_rvq()
    z = smooth_latents(seed=3)
    full = rvq.encode(z, hold=hold)
    for n_q in (1, 2):
        assert torch.equal(rvq.encode(z, n_q=n_q, hold=hold), full[:, :n_q])
    quantized = rvq.decode(full)
    vectors = rvq.latent_codebooks()
    by_hand = sum(vectors[k][full[:, k]].transpose(1, 2) for k in range(rvq.num_codebooks))
    torch.testing.assert_close(quantized, by_hand)
    # each frame's stack error is within the margin of its own first code's (held) or is that code's
    own = rvq.decode(rvq.encode(z))
    assert ((z - quantized).pow(2).sum(1) <= (1 + hold) * (z - own).pow(2).sum(1) + 1e-5).all()


def test_previous_continues_an_input_exactly() -> None:
    rvq = trained_rvq()
    z = smooth_latents(seed=4)
    whole = rvq.encode(z, hold=1.0)
    pieces, previous = [], None
    for start, stop in [(0, 7), (7, 8), (8, 31), (31, 60)]:
        piece = rvq.encode(z[..., start:stop], hold=1.0, previous=previous)
        previous = piece[:, 0, -1]
        pieces.append(piece)
    assert torch.equal(torch.cat(pieces, dim=-1), whole)


def test_held_codes_refuse_bad_arguments() -> None:
    rvq = trained_rvq()
    z = smooth_latents(batch=2)
    with pytest.raises(ConfigError, match="hold"):
        rvq.encode(z, hold=-0.5)
    with pytest.raises(ConfigError, match="allowed range"):
        rvq.encode(z, hold=1000.0)
    with pytest.raises(InputError, match=r"\[B\] = \[2\]"):
        rvq.encode(z, hold=1.0, previous=torch.zeros(3, dtype=torch.long))
    with pytest.raises(InputError, match="outside"):
        rvq.encode(z, hold=1.0, previous=torch.full((2,), 16))


# --------------------------------------------------------------------------------------------------
# The tokenizer
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return make_tiny_tokenizer(seed=0)


def test_tokenizer_hold_zero_is_bit_identical_and_margins_lengthen_runs(tokenizer: Tokenizer) -> None:
    wav = speech_like(24000, seed=5)
    plain = tokenizer.encode(wav, tokenizer.sample_rate)
    assert tokenizer.first_codebook_hold == 0.0
    assert torch.equal(tokenizer.encode(wav, tokenizer.sample_rate, hold=0.0), plain)
    held = tokenizer.encode(wav, tokenizer.sample_rate, hold=4.0)
    assert held.shape == plain.shape
    assert runs(held[None, 0]) < runs(plain[None, 0])
    audio = tokenizer.decode(held, num_samples=len(wav))  # held codes decode as any codes
    assert audio.shape == (len(wav),) and bool(torch.isfinite(audio).all())


def test_windows_batches_and_files_give_the_codes_of_a_whole_input(
    tokenizer: Tokenizer, tmp_path: Path, write_audio: Callable[..., Path]
) -> None:
    wavs = [speech_like(length, seed=6 + index) for index, length in enumerate([40000, 9000, 23456])]
    whole = [tokenizer.encode(wav, tokenizer.sample_rate, hold=1.0) for wav in wavs]
    windowed = [tokenizer.encode(wav, tokenizer.sample_rate, chunk_seconds=0.3, hold=1.0) for wav in wavs]
    for expected, got in zip(whole, windowed, strict=True):
        assert torch.equal(got, expected)
    batch = tokenizer.encode_batch(wavs, tokenizer.sample_rate, chunk_seconds=0.5, hold=1.0)
    for index, expected in enumerate(whole):
        assert torch.equal(batch.codes[index, :, : int(batch.lengths[index])], expected)
    path = write_audio(tmp_path / "long.wav", wavs[0])
    from_file = tokenizer.encode_file(path, chunk_seconds=0.3, hold=1.0).codes
    expected = tokenizer.encode(torch.from_numpy(np.asarray(load_wav(path))), tokenizer.sample_rate, hold=1.0)
    assert np.array_equal(from_file, expected.numpy())


def test_the_default_margin_comes_from_the_config_and_is_checked() -> None:
    base = make_tiny_config()
    quantizer = dataclasses.replace(base.model.quantizer, first_codebook_hold=2.0)
    config = dataclasses.replace(base, model=dataclasses.replace(base.model, quantizer=quantizer))
    held = make_tiny_tokenizer(seed=0, config=config)
    plain = make_tiny_tokenizer(seed=0)
    wav = speech_like(16000, seed=9)
    assert held.first_codebook_hold == 2.0
    assert torch.equal(held.encode(wav, 16000), plain.encode(wav, 16000, hold=2.0))
    assert torch.equal(held.encode(wav, 16000, hold=0.0), plain.encode(wav, 16000))
    plain.first_codebook_hold = 2.0
    assert torch.equal(plain.encode(wav, 16000), held.encode(wav, 16000))
    with pytest.raises(ConfigError, match="first_codebook_hold"):
        plain.first_codebook_hold = -1.0
    with pytest.raises(ConfigError, match="hold"):
        plain.encode(wav, 16000, hold=float("nan"))
    group_quantizer = QuantizerConfig(
        kind="group", num_codebooks=2, codebook_size=16, first_codebook_hold=1.0
    )
    with pytest.raises(ConfigError, match="first_codebook_hold"):
        dataclasses.replace(base.model, quantizer=group_quantizer).validate()
    group = make_tiny_tokenizer(seed=0, kind="group")
    with pytest.raises(InputError, match="residual VQ"):
        group.encode(wav, 16000, hold=1.0)
    with pytest.raises(InputError, match="residual VQ"):
        group.first_codebook_hold = 1.0
    group.encode(wav, 16000, hold=0.0)  # 0 is every model's


def test_onnx_export_refuses_held_codes(tmp_path: Path) -> None:
    from vqaudio.codec.onnx_export import export_onnx

    held = make_tiny_tokenizer(seed=0)
    held.first_codebook_hold = 1.0
    with pytest.raises(InputError, match="first_codebook_hold"):
        export_onnx(held, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()


# --------------------------------------------------------------------------------------------------
# Token files and the command line
# --------------------------------------------------------------------------------------------------
def test_token_files_record_the_margin(tokenizer: Tokenizer, audio_folder: Path, tmp_path: Path) -> None:
    tokenize_corpus(tokenizer, audio_folder, tmp_path / "plain.npy", progress=False)
    summary = tokenize_corpus(tokenizer, audio_folder, tmp_path / "held.npy", hold=1.5, progress=False)
    assert "first-codebook hold 1.5" in summary.line()
    plain, held = load_tokens(tmp_path / "plain.npy"), load_tokens(tmp_path / "held.npy")
    assert plain.meta["first_codebook_hold"] == 0.0 and held.meta["first_codebook_hold"] == 1.5
    for utt_id in held:
        wav = torch.from_numpy(load_wav(audio_folder / held.entry(utt_id).path))
        assert np.array_equal(held[utt_id], tokenizer.encode(wav, 16000, hold=1.5).numpy())
    assert any(not np.array_equal(plain[utt_id], held[utt_id]) for utt_id in held)


def test_cli_hold_option(
    run: Callable[..., RunResult], tiny_model_dir: Path, audio_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tokens.npy"
    code, stdout, err = run(
        "tokenize", audio_folder, out, "--model", tiny_model_dir, "--hold", "2", "--no-progress"
    )
    assert code == 0, err
    assert "first-codebook hold 2" in stdout
    assert json.loads(out.with_name("tokens.meta.json").read_text())["first_codebook_hold"] == 2.0
    code, stdout, _ = run("info", out)
    assert code == 0 and "first-codebook hold 2" in stdout
    status, _, err = run(
        "tokenize", audio_folder, tmp_path / "bad.npy", "--model", tiny_model_dir, "--hold", "-1"
    )
    assert status == 2 and "--hold" in err
    status, _, err = run("resynth", out, tmp_path / "wavs", "--model", tiny_model_dir, "--hold", "1")
    assert status == 2 and "a token file is decoded as it is" in err
    wav_out = tmp_path / "round.wav"
    code, _, err = run(
        "resynth", audio_folder / "a.wav", wav_out, "--model", tiny_model_dir, "--hold", "1", "--no-progress"
    )
    assert code == 0 and wav_out.is_file(), err
