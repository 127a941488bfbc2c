"""Mixed-precision training (train.precision, vqaudio.training.precision): bf16 autocast on the CPU trains the
codec and the prior about as well as float32, keeps the spectral losses and the prior's cross-entropy in float32,
resumes exactly, and refuses fp16 without CUDA."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from test_prior import fast_train_config, token_meta
from test_training import TINY_ADVERSARIAL, state_dicts_equal, tiny_training_config, write_corpus

from vqaudio.cli.main import main
from vqaudio.codec.losses import ReconstructionLoss
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.codec.training import train_tokenizer
from vqaudio.config import ConfigError, LossConfig, PriorRunConfig, load_yaml
from vqaudio.data.corpus import Utterance
from vqaudio.prior.training import TokenSet, train_prior, window_loss
from vqaudio.prior.wavenet import WaveNetPrior
from vqaudio.training import precision as precision_module
from vqaudio.training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from vqaudio.training.logs import read_metrics

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest and steady


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Utterance], list[Utterance]]:
    utterances = write_corpus(tmp_path_factory.mktemp("precision"), 7, seconds=0.6)
    return utterances[:6], utterances[6:]


def _prior_corpus() -> dict[str, np.ndarray]:
    """A period-5 pattern on codebook 1 and a per-utterance phase on codebook 2 (learnable, not trivially)."""
    frames = np.arange(100)
    return {f"u{i}": np.stack([frames % 5 * 3 % 16, (frames * 7 + i) % 16]) for i in range(6)}


# --------------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------------
def test_reconstruction_loss_is_float32_under_autocast() -> None:
    """The STFT, mel and envelope terms of bfloat16 audio under bf16 autocast equal the float32 computation."""
    config = LossConfig(envelope_weight=1.0)
    loss = ReconstructionLoss(config, 16000)
    generator = torch.Generator().manual_seed(0)
    target = 0.1 * torch.randn(2, 8000, generator=generator)
    pred = (target + 0.05 * torch.randn(2, 8000, generator=generator)).bfloat16()  # as a bf16 decoder gives
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss(pred, target)
    reference = loss(pred.float(), target)
    for name, value in mixed._asdict().items():
        assert value.dtype == torch.float32, name
        assert torch.equal(value, getattr(reference, name)), name


def test_prior_cross_entropy_is_float32_under_autocast() -> None:
    run = load_yaml(RECIPES / "prior_tiny.yaml", PriorRunConfig)
    config = run.prior.__class__(**{**run.prior.__dict__, "num_codebooks": 2, "codebook_size": 16})
    torch.manual_seed(0)
    model = WaveNetPrior(config)
    codes = torch.as_tensor(np.stack([_prior_corpus()["u0"][:, :32]] * 2))
    mask = torch.ones(2, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(codes, None)
        mixed = window_loss(model, codes, mask, None)
    assert not torch.equal(logits, model(codes, None))  # autocast reached the network (bf16 products)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, window_loss(lambda *_: logits, codes, mask, None))  # type: ignore[arg-type]


def test_precision_is_checked(tmp_path: Path, corpus: tuple[list[Utterance], list[Utterance]]) -> None:
    with pytest.raises(ConfigError, match="precision"):
        tiny_training_config(**{"train.precision": "fp8"})
    train, valid = corpus
    fp16 = tiny_training_config(**{"train.precision": "fp16"})
    with pytest.raises(ConfigError, match="fp16 needs CUDA .*use bf16 on the CPU"):
        train_tokenizer(fp16, train, valid, tmp_path / "codec", device="cpu", progress=False)
    assert not (tmp_path / "codec").exists()
    tokens = TokenSet(_prior_corpus(), token_meta(2, 16), "pattern")
    with pytest.raises(ConfigError, match="fp16 needs CUDA .*use bf16 on the CPU"):
        train_prior(tokens, fast_train_config(precision="fp16"), tmp_path / "prior", progress=False)


def test_bf16_warns_on_a_cpu_without_bf16_kernels(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """There torch's bf16 convolutions take a slow path (10x slower than fp32 on an AVX2 CPU)."""
    cpu = torch.device("cpu")
    for fast, precision, warned in [(False, "bf16", True), (True, "bf16", False), (False, "fp32", False)]:
        monkeypatch.setattr(precision_module, "cpu_has_bf16_convolutions", lambda fast=fast: fast)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=precision_module.__name__):
            precision_module.MixedPrecision(precision, cpu)  # type: ignore[arg-type]
        assert ("use fp32 on this machine" in caplog.text) is warned, (fast, precision)


def test_cli_refuses_fp16_on_the_cpu_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_corpus(tmp_path / "data", 2, seconds=0.6)
    args = [
        "train",
        str(RECIPES / "tiny.yaml"),
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*args, "--device", "cpu", "--set", "train.precision=fp16"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    assert "fp16 needs CUDA" in err and "use bf16 on the CPU" in err


# --------------------------------------------------------------------------------------------------
# Tiny runs: bf16 against fp32
# --------------------------------------------------------------------------------------------------
def test_bf16_codec_run_learns_as_well_as_fp32(
    tmp_path: Path, corpus: tuple[list[Utterance], list[Utterance]]
) -> None:
    """60 steps of the tiny codec (3-4 s each on one core). Measured (2026-12-07, x86 CPU): held-out loss
    4.612 -> 2.719 in fp32 and -> 2.760 in bf16 (1.5% apart), mel distance 0.857 vs 0.882. Asked: bf16 cuts
    the held-out loss by at least 30% and ends within 8% of fp32 (bf16 rounding makes the runs drift apart)."""
    train, valid = corpus
    final: dict[str, float] = {}
    for precision in ("fp32", "bf16"):
        config = tiny_training_config(
            **{"train.max_steps": 60, "train.validate_every": 60, "train.precision": precision}
        )
        train_tokenizer(config, train, valid, tmp_path / precision, progress=False)
        rows = read_metrics(tmp_path / precision / "metrics.jsonl")
        validations = [row for row in rows if row["kind"] == "valid"]
        before, after = validations[0]["loss"], validations[-1]["loss"]
        assert validations[-1]["step"] == 60
        assert all(row["precision"] == precision for row in rows if row["kind"] == "train")
        final[precision] = after
        print(f"\n{precision}: held-out loss {before:.3f} -> {after:.3f}")
        if precision == "bf16":
            assert after <= 0.7 * before
    assert abs(final["bf16"] - final["fp32"]) <= 0.08 * final["fp32"]
    released = Tokenizer.load(tmp_path / "bf16")  # the release model stays float32
    assert all(p.dtype == torch.float32 for p in released.model.parameters())
    assert released.training["precision"] == "bf16"
    assert load_checkpoint(tmp_path / "bf16" / CHECKPOINT_FILE)["grad_scaler"] == {}  # no scaler for bf16


def test_bf16_prior_run_learns_as_well_as_fp32(tmp_path: Path) -> None:
    """60 steps of prior_tiny (under a second). Measured (2026-12-07): training bits per token 3.903 -> 2.050
    in fp32, 3.903 -> 2.048 in bf16 (0.1% apart). Asked: a 35% cut and within 3% of fp32."""
    tokens = TokenSet(_prior_corpus(), token_meta(2, 16), "pattern")
    final: dict[str, float] = {}
    for precision in ("fp32", "bf16"):
        config = fast_train_config(
            max_steps=60, window_frames=32, holdout_fraction=0.0, learning_rate=1e-2, log_every=10,
            precision=precision,
        )  # fmt: skip
        result = train_prior(tokens, config, tmp_path / precision, progress=False)
        rows = [
            json.loads(line) for line in (tmp_path / precision / "metrics.jsonl").read_text().splitlines()
        ]
        first, last = rows[0]["bits_per_token"], rows[-1]["bits_per_token"]
        assert rows[-1]["step"] == 60 and rows[-1]["precision"] == precision
        final[precision] = last
        print(f"\n{precision}: training bits per token {first:.3f} -> {last:.3f}")
        assert last <= 0.65 * first
        assert all(p.dtype == torch.float32 for p in result.prior.model.parameters())
        assert result.prior.training["precision"] == precision
    assert abs(final["bf16"] - final["fp32"]) <= 0.03 * final["fp32"]


# --------------------------------------------------------------------------------------------------
# Exact resume in bf16
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("adversarial", [False, True], ids=["reconstruction", "adversarial"])
def test_bf16_codec_run_resumes_exactly(
    tmp_path: Path, corpus: tuple[list[Utterance], list[Utterance]], adversarial: bool
) -> None:
    train, valid = corpus
    config = tiny_training_config(
        **{
            "train.max_steps": 8,
            "train.log_every": 2,
            "model.quantizer.dead_code_steps": 3,
            "train.precision": "bf16",
        },
        **(TINY_ADVERSARIAL if adversarial else {}),
    )
    train_tokenizer(config, train, valid, tmp_path / "straight", progress=False)
    train_tokenizer(config, train, valid, tmp_path / "resumed", until_step=4, progress=False)
    train_tokenizer(config, train, valid, tmp_path / "resumed", progress=False)
    a, b = (load_checkpoint(tmp_path / name / CHECKPOINT_FILE) for name in ("straight", "resumed"))
    assert a["step"] == b["step"] == 8
    assert state_dicts_equal(a["model"], b["model"]) == []
    if adversarial:  # the discriminators, trained under autocast too, resume as well
        assert state_dicts_equal(a["discriminators"]["model"], b["discriminators"]["model"]) == []
        return
    # and autocast did change the arithmetic: the same run in fp32 ends elsewhere
    fp32 = tiny_training_config(
        **{"train.max_steps": 8, "train.log_every": 2, "model.quantizer.dead_code_steps": 3}
    )
    train_tokenizer(fp32, train, valid, tmp_path / "fp32", progress=False)
    assert state_dicts_equal(a["model"], load_checkpoint(tmp_path / "fp32" / CHECKPOINT_FILE)["model"])


def test_bf16_prior_run_resumes_exactly(tmp_path: Path) -> None:
    tokens = TokenSet(_prior_corpus(), token_meta(2, 16), "pattern")
    config = fast_train_config(max_steps=8, window_frames=32, checkpoint_every=100, precision="bf16")
    train_prior(tokens, config, tmp_path / "straight", progress=False)
    train_prior(tokens, config, tmp_path / "resumed", progress=False, until_step=5)
    train_prior(tokens, config, tmp_path / "resumed", progress=False)
    a, b = (load_checkpoint(tmp_path / name / CHECKPOINT_FILE) for name in ("straight", "resumed"))
    assert a["step"] == b["step"] == 8
    assert state_dicts_equal(a["model"], b["model"]) == []
