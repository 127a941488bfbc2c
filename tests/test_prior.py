"""The WaveNet token prior: causality, exact likelihood, fast = naive sampling, training, files, CLI."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vqaudio.cli.main import main
from vqaudio.config import (
    Config,
    DecoderConfig,
    EncoderConfig,
    ModelConfig,
    PriorConfig,
    PriorRunConfig,
    PriorTrainConfig,
    QuantizerConfig,
    load_yaml,
)
from vqaudio.errors import DataError, ModelFileError, TokenFileError
from vqaudio.io.export import read_units
from vqaudio.io.model_file import read_meta
from vqaudio.io.token_file import TokenFileWriter, load_tokens
from vqaudio.prior import Prior, describe
from vqaudio.prior.data import Utterances, WindowSampler, split_holdout
from vqaudio.prior.ngram import count_ngrams, cross_entropy_bits, empirical_entropy_bits
from vqaudio.prior.training import TokenSet, train_prior
from vqaudio.prior.wavenet import WaveNetPrior, receptive_field

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
HASH = "ab" * 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest and steady


def tiny_config(
    num_codebooks: int = 3,
    codebook_size: int = 16,
    num_conditions: int = 0,
    previous_code_in_head: bool = False,
) -> PriorConfig:
    return PriorConfig(
        previous_code_in_head=previous_code_in_head,
        num_codebooks=num_codebooks,
        codebook_size=codebook_size,
        residual_channels=16,
        skip_channels=16,
        head_channels=16,
        kernel_size=2,
        layers_per_cycle=3,
        num_cycles=2,
        num_conditions=num_conditions,
        condition_dim=8,
    )


def token_meta(num_codebooks: int = 3, codebook_size: int = 16, model_hash: str = HASH) -> dict:
    return {
        "model_hash": model_hash,
        "model_name": "tiny",
        "sample_rate": 16000,
        "hop_length": 320,
        "frame_rate": 50.0,
        "num_codebooks": num_codebooks,
        "codebook_size": codebook_size,
    }


def tiny_prior(config: PriorConfig | None = None, speakers: tuple[str, ...] = (), seed: int = 0) -> Prior:
    config = config or tiny_config(num_conditions=len(speakers))
    torch.manual_seed(seed)
    model = WaveNetPrior(config)
    with torch.no_grad():  # a random prior far from uniform, so that tests see real dependencies
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    meta = token_meta(config.num_codebooks or 3, config.codebook_size or 16)
    from vqaudio.prior.prior import token_stream

    return Prior(model, PriorRunConfig(prior=config), token_stream(meta), speakers)


def write_tokens(path: Path, corpus: dict[str, np.ndarray], meta: dict) -> Path:
    with TokenFileWriter(
        path,
        num_codebooks=meta["num_codebooks"],
        codebook_size=meta["codebook_size"],
        sample_rate=meta["sample_rate"],
        hop_length=meta["hop_length"],
        model_name=meta["model_name"],
        model_hash=meta["model_hash"],
    ) as writer:
        for utt_id, codes in corpus.items():
            writer.add(utt_id, f"/audio/{utt_id}.wav", codes, codes.shape[1] * meta["hop_length"])
    return path


def pattern_corpus(
    num_utterances: int = 6, frames: int = 100, codebook_size: int = 16
) -> dict[str, np.ndarray]:
    """A period-5 pattern over 2 codebooks (codebook 2 a function of codebook 1), all utterances in phase."""
    phase = np.arange(frames) % 5
    codes = np.stack([phase * 3 % codebook_size, (phase * 7 + 1) % codebook_size]).astype(np.int64)
    return {f"utt{i:02d}": codes.copy() for i in range(num_utterances)}


def fast_train_config(**train: object) -> PriorRunConfig:
    run = load_yaml(RECIPES / "prior_tiny.yaml", PriorRunConfig)
    settings = {"tensorboard": False, **train}
    return PriorRunConfig(prior=run.prior, train=PriorTrainConfig(**{**run.train.__dict__, **settings}))


# --------------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kernel_size, previous_code_in_head", [(2, False), (3, False), (2, True)], ids=["k2", "k3", "k2-previous"]
)
def test_causal_over_frames_and_within_frame(kernel_size: int, previous_code_in_head: bool) -> None:
    config = PriorConfig(
        **{
            **tiny_config(num_conditions=2, previous_code_in_head=previous_code_in_head).__dict__,
            "kernel_size": kernel_size,
        }
    )
    model = tiny_prior(config, speakers=("a", "b")).model
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (2, 3, 30), generator=generator)
    condition = torch.tensor([0, 1])
    with torch.no_grad():
        reference = model(codes, condition)  # [B, K, F, V]
        for frame, codebook in itertools.product([0, 7, 29], range(3)):
            changed = codes.clone()
            changed[:, codebook, frame] = (changed[:, codebook, frame] + 5) % 16
            difference = (model(changed, condition) - reference).abs().amax(dim=-1)  # [B, K, F]
            assert difference[:, :, :frame].max() == 0 if frame else True, "a past frame's output changed"
            assert difference[:, : codebook + 1, frame].max() == 0, "an earlier codebook of the frame changed"
            if codebook < 2:
                assert difference[:, codebook + 1 :, frame].max() > 1e-4, "later codebooks ignore the frame"
            if frame < 29:
                assert difference[:, :, frame + 1].max() > 1e-4, "the next frame ignores this one"


@pytest.mark.parametrize("previous_code_in_head", [False, True], ids=["trunk-only", "previous"])
def test_likelihood_is_exact_normalised_distribution(previous_code_in_head: bool) -> None:
    """Summing exp(log_prob) over every possible sequence (K=2, V=3, F=2: 81 sequences) gives 1."""
    config = tiny_config(2, 3, num_conditions=2, previous_code_in_head=previous_code_in_head)
    prior = tiny_prior(config, speakers=("a", "b"))
    sequences = torch.tensor(list(itertools.product(range(3), repeat=4))).view(-1, 2, 2)  # [81, K, F]
    for speaker in ("a", "b"):
        log_prob = prior.log_prob(sequences, condition=speaker)  # [81, K, F]
        assert log_prob.shape == (81, 2, 2)
        total = log_prob.double().sum(dim=(1, 2)).exp().sum()
        assert total.item() == pytest.approx(1.0, abs=1e-5)


def test_log_prob_shapes_and_receptive_field() -> None:
    prior = tiny_prior()
    codes = torch.randint(0, 16, (3, 40))
    single = prior.log_prob(codes)
    batch = prior.log_prob(codes[None].repeat(2, 1, 1))
    assert single.shape == (3, 40) and batch.shape == (2, 3, 40)
    assert torch.allclose(batch[0], single, atol=1e-6) and (single <= 0).all()
    assert prior.receptive_field == receptive_field(prior.config) == 1 + 2 * (1 + 2 + 4)
    # a frame beyond the receptive field cannot change the prediction
    # frame 39 is predicted from frames 39 - field .. 38
    field = prior.receptive_field
    changed = codes.clone()
    changed[:, 38 - field] = (changed[:, 38 - field] + 1) % 16
    assert torch.equal(prior.log_prob(changed)[:, 39], single[:, 39])
    changed[:, 39 - field] = (changed[:, 39 - field] + 1) % 16
    assert not torch.equal(prior.log_prob(changed)[:, 39], single[:, 39])


def test_incremental_steps_equal_the_full_pass() -> None:
    model = tiny_prior(PriorConfig(**{**tiny_config().__dict__, "kernel_size": 3})).model
    codes = torch.randint(0, 16, (2, 3, 25))
    with torch.no_grad():
        inputs = model.trunk_inputs(codes)  # [B, C, F + 1]
        full = model.trunk(inputs, None)  # [B, H, F + 1]
        state = model.start_generation(inputs[:, :, :10], None)  # primed with positions 0..9
        steps = torch.stack([model.step(inputs[:, :, t], state) for t in range(10, 26)], dim=2)
    assert torch.allclose(steps, full[:, :, 10:], atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "prompt_frames, previous_code_in_head", [(0, False), (9, False), (0, True), (9, True)]
)
def test_fast_and_naive_generation_give_identical_tokens(
    prompt_frames: int, previous_code_in_head: bool
) -> None:
    config = tiny_config(num_conditions=2, previous_code_in_head=previous_code_in_head)
    prior = tiny_prior(config, speakers=("a", "b"))
    prompt = torch.randint(0, 16, (3, prompt_frames)) if prompt_frames else None
    settings = dict(prompt=prompt, seed=3, num_samples=2, condition=["a", "b"], top_k=8, temperature=0.9)
    fast = prior.generate(40, fast=True, **settings)
    naive = prior.generate(40, fast=False, **settings)
    assert fast.shape == (2, 3, prompt_frames + 40)
    assert torch.equal(fast, naive)


def test_generate_shapes_ranges_prompt_and_seed() -> None:
    prior = tiny_prior()
    single = prior.generate(30, seed=0)
    assert single.shape == (3, 30) and single.dtype == torch.long
    single[0, 0] = 1  # an ordinary tensor: editable in place
    assert 0 <= int(single.min()) and int(single.max()) < 16
    assert torch.equal(single[:, 1:], prior.generate(30, seed=0)[:, 1:])
    assert not torch.equal(single[:, 1:], prior.generate(30, seed=1)[:, 1:])
    batch = prior.generate(12, seed=0, num_samples=4)
    assert batch.shape == (4, 3, 12)
    assert len({tuple(row.flatten().tolist()) for row in batch}) == 4, "samples of a batch should differ"
    prompt = torch.randint(0, 16, (3, 7))
    continued = prior.generate(20, prompt=prompt, seed=0, num_samples=3)
    assert continued.shape == (3, 3, 27)
    assert torch.equal(continued[:, :, :7], prompt.expand(3, -1, -1)), "the prompt must stay unchanged"
    batched_prompt = torch.randint(0, 16, (2, 3, 5))
    assert prior.generate(4, prompt=batched_prompt, seed=0).shape == (2, 3, 9)
    greedy = prior.generate(10, prompt=prompt, temperature=0.0)
    assert torch.equal(greedy, prior.generate(10, prompt=prompt, temperature=0.0, seed=5))
    top1 = prior.generate(10, prompt=prompt, top_k=1, seed=9)
    assert torch.equal(top1, greedy), "top_k=1 is greedy"


# --------------------------------------------------------------------------------------------------
# Baselines and data
# --------------------------------------------------------------------------------------------------
def test_ngram_baselines_on_known_sequences() -> None:
    alternating = [np.array([[0, 1] * 50, [2, 3] * 50])]  # K=2, V=4, F=100
    empirical = empirical_entropy_bits(alternating, 4)
    assert empirical.unigram == pytest.approx([1.0, 1.0])
    assert empirical.bigram == pytest.approx([0.01, 0.01])  # only the first frame costs its 1 bit
    smoothed = cross_entropy_bits(count_ngrams(alternating, 4), alternating)
    assert (smoothed.unigram > 1.0).all() and (smoothed.unigram < 1.1).all()  # add-1/2 leaks a little mass
    assert (smoothed.bigram < 0.1).all()
    unseen = [np.array([[3, 2] * 10, [0, 1] * 10])]
    assert (cross_entropy_bits(count_ngrams(alternating, 4), unseen).bigram < 20).all(), (
        "smoothing keeps p > 0"
    )


def test_windows_stay_inside_utterances_and_holdout_is_stable() -> None:
    corpus = Utterances(
        ["a", "b", "c"],
        [np.full((2, 5), 1), np.full((2, 50), 2), np.full((2, 80), 3)],
        None,
    )
    sampler = WindowSampler(corpus, window_frames=20, batch_size=64, seed=0)
    batch = sampler.sample()
    assert batch.codes.shape == (64, 2, 20) and batch.conditions is None
    for codes, mask in zip(batch.codes, batch.mask, strict=True):
        values = set(codes[:, mask].flatten().tolist())
        assert len(values) == 1, "a window mixes two utterances"
        assert mask.sum() == (5 if values == {1} else 20)
        assert (codes[:, ~mask] == 0).all()
    state = sampler.generator.get_state()
    first = sampler.sample()
    sampler.generator.set_state(state)
    assert torch.equal(sampler.sample().codes, first.codes)
    train, held = split_holdout(corpus, 0.34)
    assert held is not None and len(held.ids) == 1 and sorted(train.ids + held.ids) == ["a", "b", "c"]
    assert split_holdout(corpus, 0.34)[1].ids == held.ids  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------------
# Training, files
# --------------------------------------------------------------------------------------------------
def test_tiny_prior_overfits_a_repeated_pattern(tmp_path: Path) -> None:
    corpus = pattern_corpus()
    train = TokenSet(corpus, token_meta(2, 16), "pattern")
    config = fast_train_config(max_steps=150, window_frames=32, holdout_fraction=0.0, learning_rate=1e-2)
    result = train_prior(train, config, tmp_path / "prior", progress=False)
    bits = -result.prior.log_prob(corpus["utt00"]).mean().item() / math.log(2)
    assert bits < 0.1, f"{bits:.3f} bits per token on a deterministic pattern"
    assert result.step == 150
    lines = [json.loads(line) for line in (tmp_path / "prior" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["step"] == 150 and lines[0]["bits_per_token"] > lines[-1]["bits_per_token"]
    generated = result.prior.generate(20, prompt=torch.as_tensor(corpus["utt00"][:, :5]), temperature=0.0)
    assert torch.equal(generated, torch.as_tensor(corpus["utt00"][:, :25])), (
        "greedy continuation of the pattern"
    )


def test_speaker_conditioning_selects_the_speakers_pattern(tmp_path: Path) -> None:
    """Two speakers with different patterns: greedy samples conditioned on each follow its own."""
    frames = np.arange(60)
    patterns = {
        "anna": np.stack([frames % 3, frames % 3 + 3]),
        "bob": np.stack([frames % 4 + 8, frames % 2 + 12]),
    }
    corpus = {f"{name}{i}": pattern for name, pattern in patterns.items() for i in range(4)}
    manifest = tmp_path / "corpus.tsv"
    rows = ["id\tpath\tspeaker"] + [f"{utt}\t{utt}.wav\t{utt.rstrip('0123456789')}" for utt in corpus]
    manifest.write_text("\n".join(rows) + "\n")
    from vqaudio.prior.data import read_speakers

    config = fast_train_config(max_steps=150, window_frames=32, holdout_fraction=0.0, learning_rate=1e-2)
    train = TokenSet(corpus, token_meta(2, 16), "two speakers")
    prior = train_prior(
        train, config, tmp_path / "p", speaker_of=read_speakers(manifest), progress=False
    ).prior
    assert prior.speakers == ("anna", "bob") and prior.config.num_conditions == 2
    for name, pattern in patterns.items():
        prompt = torch.as_tensor(pattern[:, :4])
        generated = prior.generate(20, prompt=prompt, temperature=0.0, condition=name)
        assert torch.equal(generated, torch.as_tensor(pattern[:, :24])), name
    first_frames = prior.generate(1, temperature=0.0, condition=["anna", "bob"], num_samples=2)[:, :, 0]
    assert first_frames[0, 0] < 3 <= 8 <= first_frames[1, 0], "the start frame depends on the speaker"


def test_resume_continues_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    corpus = {f"u{i}": rng.integers(0, 16, (3, 40)) for i in range(5)}
    train = TokenSet(corpus, token_meta(), "random")
    config = fast_train_config(max_steps=8, checkpoint_every=100, validate_every=3, log_every=2)
    # dropout draws from the global RNG, which the checkpoint must restore
    config = PriorRunConfig(
        prior=PriorConfig(**{**config.prior.__dict__, "dropout": 0.2}), train=config.train
    )
    straight = train_prior(train, config, tmp_path / "straight", progress=False)
    first = train_prior(train, config, tmp_path / "resumed", progress=False, until_step=5)
    assert first.step == 5
    torch.manual_seed(1234)  # the global RNG is restored from the checkpoint, not taken from here
    resumed = train_prior(train, config, tmp_path / "resumed", progress=False)
    assert resumed.step == 8
    checkpoints = [
        torch.load(path / "checkpoint.pt", weights_only=True) for path in (straight.out, resumed.out)
    ]
    for name, tensor in checkpoints[0]["model"].items():
        assert torch.equal(tensor, checkpoints[1]["model"][name]), name
    metrics = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics] == [
        json.loads(line)["step"]
        for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    ]
    changed = PriorRunConfig(
        prior=PriorConfig(**{**config.prior.__dict__, "residual_channels": 8}), train=config.train
    )
    with pytest.raises(DataError, match="architecture differs"):
        train_prior(train, changed, tmp_path / "resumed", progress=False)


def test_save_load_strict_identical(tmp_path: Path) -> None:
    prior = tiny_prior(speakers=("x", "y"))
    codes = torch.randint(0, 16, (2, 3, 25))
    prior.save(tmp_path / "p")
    loaded = Prior.load(tmp_path / "p")
    assert torch.equal(loaded.log_prob(codes, condition=[0, 1]), prior.log_prob(codes, condition=["x", "y"]))
    assert loaded.speakers == ("x", "y") and loaded.tokenizer_hash == HASH
    assert torch.equal(loaded.generate(10, seed=0, condition="y"), prior.generate(10, seed=0, condition=1))
    meta = read_meta(tmp_path / "p")
    assert meta["format"] == "vqaudio-prior" and meta["tokens"]["tokenizer_hash"] == HASH
    text = describe(meta)
    assert "receptive field: 15 frames" in text and "0.30 s" in text and "2 speakers" in text
    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "p" / "model.safetensors")
    weights["unexpected.weight"] = torch.zeros(1)
    save_file(weights, tmp_path / "p" / "model.safetensors")
    with pytest.raises(ModelFileError):
        Prior.load(tmp_path / "p")


# --------------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors() -> None:
    prior = tiny_prior()
    with pytest.raises(ValueError, match="outside"):
        prior.log_prob(torch.full((3, 5), 16))
    with pytest.raises(ValueError, match="n_q=3"):
        prior.log_prob(torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        prior.log_prob(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="non-negative"):
        prior.generate(-1)
    with pytest.raises(ValueError, match="temperature"):
        prior.generate(5, temperature=-1.0)
    with pytest.raises(ValueError, match="nothing to generate"):
        prior.generate(0)
    with pytest.raises(ValueError, match="without conditioning"):
        prior.generate(3, condition=0)
    conditioned = tiny_prior(speakers=("a", "b"))
    with pytest.raises(ValueError, match="conditioned on 2"):
        conditioned.generate(3)
    with pytest.raises(ValueError, match="unknown speaker"):
        conditioned.generate(3, condition="zz")
    with pytest.raises(TokenFileError, match="--force"):
        prior.check_tokens(token_meta(model_hash="cd" * 32))
    prior.check_tokens(token_meta(model_hash="cd" * 32), force=True)
    with pytest.raises(TokenFileError, match="codebooks"):
        prior.check_tokens(token_meta(num_codebooks=4), force=True)
    with pytest.raises(ValueError, match="must be set"):
        WaveNetPrior(PriorConfig())


def test_training_rejects_bad_tokens(tmp_path: Path) -> None:
    config = fast_train_config(max_steps=2)
    bad = TokenSet({"u": np.array([[0, 1, 99]] * 3)}, token_meta(), "bad.npy")
    with pytest.raises(TokenFileError, match="outside"):
        train_prior(bad, config, tmp_path / "a", progress=False)
    good = TokenSet({"u": np.zeros((3, 10), dtype=np.int64)}, token_meta(), "good.npy")
    other = TokenSet({"v": np.zeros((3, 10), dtype=np.int64)}, token_meta(model_hash="cd" * 32), "other.npy")
    with pytest.raises(TokenFileError, match="same model"):
        train_prior(good, config, tmp_path / "b", valid=other, progress=False)
    wrong = PriorRunConfig(
        prior=PriorConfig(**{**config.prior.__dict__, "num_codebooks": 5}), train=config.train
    )
    with pytest.raises(DataError, match="num_codebooks=5"):
        train_prior(good, wrong, tmp_path / "c", progress=False)
    with pytest.raises(DataError, match="no speaker"):
        train_prior(good, config, tmp_path / "d", speaker_of={"someone_else": "s1"}, progress=False)


def test_float16_release_loads_as_float32(tmp_path: Path) -> None:
    prior = tiny_prior()
    codes = torch.randint(0, 16, (3, 30))
    prior.save(tmp_path / "half", weights_dtype="float16")
    prior.save(tmp_path / "full")
    half_size = (tmp_path / "half" / "model.safetensors").stat().st_size
    assert half_size < 0.6 * (tmp_path / "full" / "model.safetensors").stat().st_size
    loaded = Prior.load(tmp_path / "half")  # strict, hash-checked
    assert read_meta(tmp_path / "half")["weights_dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    for name, tensor in prior.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor.half().float()), name
    difference = (loaded.log_prob(codes) - prior.log_prob(codes)).abs().max()
    assert difference < 1e-2
    assert "float16 on disk" in describe(read_meta(tmp_path / "half"))
    with pytest.raises(ValueError, match="weights_dtype"):
        prior.save(tmp_path / "x", weights_dtype="int8")

    # a description that contradicts the stored tensors, and one from a newer vqaudio
    config_json = tmp_path / "half" / "config.json"
    meta = json.loads(config_json.read_text())
    config_json.write_text(json.dumps({**meta, "weights_dtype": "float32"}))
    with pytest.raises(ModelFileError, match="says float32 weights"):
        Prior.load(tmp_path / "half")
    config_json.write_text(json.dumps({**meta, "weights_dtype": "bfloat8"}))
    with pytest.raises(ModelFileError, match="upgrade vqaudio"):
        Prior.load(tmp_path / "half")

    # files written before weights_dtype existed: float32, no key
    config_json = tmp_path / "full" / "config.json"
    meta = json.loads(config_json.read_text())
    del meta["weights_dtype"]
    config_json.write_text(json.dumps(meta))
    assert torch.equal(Prior.load(tmp_path / "full").log_prob(codes), prior.log_prob(codes))


def test_load_without_embedded_default_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vqaudio.prior.prior.PRETRAINED_DIR", tmp_path)
    with pytest.raises(ModelFileError, match="no embedded default prior.*reinstall vqaudio"):
        Prior.load()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_training_with_a_checkpoint(tmp_path: Path, signum: int) -> None:
    """Even with SIGINT ignored, as a non-interactive shell starts background jobs: stop, checkpoint, 130."""
    train_file = write_tokens(tmp_path / "train.npy", pattern_corpus(), token_meta(num_codebooks=2))
    out = tmp_path / "prior"
    command = [sys.executable, "-m", "vqaudio.cli.main", "prior", "train", str(train_file), "--out", str(out)]
    command += ["--config", str(RECIPES / "prior_tiny.yaml"), "--no-progress"]
    for setting in ("max_steps=100000", "log_every=1", "checkpoint_every=100000", "num_threads=1"):
        command += ["--set", f"train.{setting}"]
    command += ["--set", "train.tensorboard=false", "--set", "train.holdout_fraction=0"]

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=ignore_sigint)
    try:
        deadline = time.monotonic() + 120
        metrics = out / "metrics.jsonl"
        while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "checkpoint written" in stderr
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert step >= 3
    assert Prior.load(out).training["step"] == step  # no validation set: the release is the latest weights


# --------------------------------------------------------------------------------------------------
# Command line, end to end with a tiny tokenizer
# --------------------------------------------------------------------------------------------------
def tiny_tokenizer(folder: Path) -> object:
    from vqaudio.codec.tokenizer import Tokenizer
    from vqaudio.codec.vqvae import build_model

    model_config = ModelConfig(
        latent_dim=8,
        encoder=EncoderConfig(
            input="mel",
            channels=8,
            max_channels=16,
            strides=(2,),
            n_mels=16,
            mel_n_fft=320,
            mel_hop_length=160,
        ),
        quantizer=QuantizerConfig(num_codebooks=3, codebook_size=16),
        decoder=DecoderConfig(
            output="istft", channels=8, max_channels=16, strides=(2,), istft_n_fft=320, istft_hop_length=160
        ),
    )
    torch.manual_seed(0)
    tokenizer = Tokenizer(build_model(model_config), Config(model=model_config), name="tiny")
    tokenizer.save(folder)
    return Tokenizer.load(folder)


def test_cli_train_eval_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    meta = token_meta(model_hash=tokenizer.hash)  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    pattern = pattern_corpus(8, 60)
    corpus = {
        key: np.concatenate([value, value[:1] + rng.integers(0, 2, (1, 60))])
        for key, value in pattern.items()
    }
    train_file = write_tokens(tmp_path / "train.npy", corpus, meta)
    dev_file = write_tokens(tmp_path / "dev.npy", dict(list(corpus.items())[:2]), meta)
    out = tmp_path / "prior"
    args = [
        "prior",
        "train",
        str(train_file),
        "--config",
        str(RECIPES / "prior_tiny.yaml"),
        "--out",
        str(out),
    ]
    args += ["--valid", str(dev_file), "--set", "train.max_steps=60", "--set", "train.tensorboard=true"]
    args += ["--tokenizer", str(tmp_path / "tok"), "--no-progress", "--threads", "1"]
    assert main(args) == 0
    assert json.loads((out / "config.json").read_text())["config"]["train"]["num_threads"] == 1
    assert {"model.safetensors", "config.json", "checkpoint.pt", "metrics.jsonl", "ngram_counts.npz"} <= {
        path.name for path in out.iterdir()
    }
    assert any((out / "tensorboard").iterdir())
    capsys.readouterr()

    assert main(["prior", "eval", str(dev_file), "--prior", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in (
        "bits_per_token",
        "bits_per_frame",
        "bits_per_second",
        "unigram_bits_per_token",
        "bigram_bits_per_token",
        "baseline",
        "codebooks",
    ):
        assert key in report
    assert len(report["codebooks"]) == 3 and "training tokens" in report["baseline"]
    assert report["bits_per_second"] == pytest.approx(report["bits_per_token"] * 3 * 50)
    assert report["bits_per_token"] < report["unigram_bits_per_token"]
    json_out = tmp_path / "eval" / "prior_eval.json"
    assert main(["prior", "eval", str(dev_file), "--prior", str(out), "--json-out", str(json_out)]) == 0
    assert "bits per second" in capsys.readouterr().out  # the table, and the JSON in the file
    assert json.loads(json_out.read_text())["bits_per_token"] == pytest.approx(report["bits_per_token"])

    # a prior copied without its n-gram counts, as the embedded one: no baselines unless --train
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model.safetensors", "config.json"):
        shutil.copy(out / name, bare / name)
    assert main(["prior", "eval", str(dev_file), "--prior", str(bare), "--json"]) == 0
    bare_report = json.loads(capsys.readouterr().out)
    assert bare_report["bits_per_token"] == pytest.approx(report["bits_per_token"])
    assert bare_report["bigram_bits_per_token"] is None and bare_report["beats_bigram"] is None
    assert (
        bare_report["codebooks"][0]["unigram_bits_per_token"] is None and "--train" in bare_report["baseline"]
    )
    assert main(["prior", "eval", str(dev_file), "--prior", str(bare)]) == 0
    header = next(
        line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("codebook")
    )
    assert "prior" in header and "unigram" not in header
    assert (
        main(["prior", "eval", str(dev_file), "--prior", str(bare), "--train", str(train_file), "--json"])
        == 0
    )
    with_train = json.loads(capsys.readouterr().out)
    assert with_train["bigram_bits_per_token"] == pytest.approx(report["bigram_bits_per_token"])
    assert main(["prior", "info", str(bare)]) == 0
    info = capsys.readouterr().out
    assert "tokenizer: tiny" in info and "weights: float32 on disk" in info and "recipe:" in info

    other = write_tokens(tmp_path / "other.npy", corpus, token_meta(model_hash="cd" * 32))
    assert main(["prior", "eval", str(other), "--prior", str(out)]) == 1
    assert "--force" in capsys.readouterr().err
    assert main(["prior", "eval", str(other), "--prior", str(out), "--force", "--json"]) == 0
    capsys.readouterr()

    samples = tmp_path / "samples"
    assert (
        main(
            [
                "prior",
                "sample",
                str(samples),
                "--prior",
                str(out),
                "--seconds",
                "0.4",
                "-n",
                "2",
                "--seed",
                "0",
                "--top-k",
                "5",
                "--temperature",
                "0.9",
            ]
        )
        == 0
    )
    sampled = load_tokens(samples / "samples.npy")  # an ordinary token file, one utterance per sample
    assert list(sampled) == ["sample_000", "sample_001"]
    codes = np.asarray(sampled["sample_001"])
    assert codes.shape == (3, 20) and codes.min() >= 0 and codes.max() < 16
    assert sampled.meta["model_hash"] == tokenizer.hash and sampled.meta["pitch_rows"] == 0  # type: ignore[attr-defined]
    audio, rate = sf.read(samples / "sample_001.wav")
    assert rate == 16000 and audio.shape == (20 * 320,)
    info = json.loads((samples / "samples.json").read_text())
    assert info["tokens"] == "samples.npy" and info["ids"] == list(sampled) and info["seed"] == 0
    # every command that reads token files takes it: resynth (the same audio), info, prior eval, export
    assert (
        main(
            [
                "resynth",
                str(samples / "samples.npy"),
                str(tmp_path / "resynth"),
                "--model",
                str(tmp_path / "tok"),
            ]
        )
        == 0
    )
    np.testing.assert_allclose(sf.read(tmp_path / "resynth" / "sample_001.wav")[0], audio, atol=1e-4)
    capsys.readouterr()
    assert main(["info", str(samples / "samples.npy"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_utterances"] == 2
    assert main(["prior", "eval", str(samples / "samples.npy"), "--prior", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bits_per_token"] > 0
    units = tmp_path / "samples.units"
    assert main(["export", str(samples / "samples.npy"), str(units), "--n-q", "3", "--no-progress"]) == 0
    assert np.array_equal(read_units(units).codes["sample_001"], codes)
    capsys.readouterr()

    prompt = tmp_path / "prompt.wav"
    t = np.arange(int(0.3 * 8000)) / 8000
    sf.write(prompt, 0.3 * np.sin(2 * np.pi * 220 * t), 8000)  # another sample rate: resampled
    continued = tmp_path / "continued"
    assert (
        main(
            [
                "prior",
                "sample",
                str(continued),
                "--prior",
                str(out),
                "--prompt",
                str(prompt),
                "--seconds",
                "0.2",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    from vqaudio.io.audio import load_audio

    expected = tokenizer.encode(load_audio(prompt, 16000), 16000)  # type: ignore[attr-defined]
    result = np.asarray(load_tokens(continued / "samples.npy")["sample_000"])
    assert result.shape == (3, expected.shape[1] + 10)
    assert np.array_equal(result[:, : expected.shape[1]], expected.numpy()), "the prompt's tokens must stay"
    assert (
        main(
            [
                "prior",
                "sample",
                str(continued),
                "--prior",
                str(out),
                "--prompt",
                str(prompt),
                "--prompt-seconds",
                "5",
                "--overwrite",
            ]
        )
        == 1
    )
    assert "shorter than" in capsys.readouterr().err


def test_tokens_only_samples_are_a_token_file_with_the_recorded_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from vqaudio.prior.audio_io import write_samples
    from vqaudio.prior.prior import token_stream

    config = tiny_config(num_codebooks=3)
    base = tiny_prior(config)
    stream = token_stream({**token_meta(), "pitch_rows": 1, "pitch_levels": 8})  # a prior of pitch-row tokens
    assert stream["pitch_rows"] == 1 and stream["pitch_levels"] == 8
    prior = Prior(base.model, base.run_config, stream)
    codes = prior.generate(7, seed=0, num_samples=2)
    files = write_samples(tmp_path / "samples", codes, prior, None, {"seed": 0})
    corpus = load_tokens(files.tokens)
    assert list(corpus) == files.ids == ["sample_000", "sample_001"] and files.audio == []
    assert (corpus.meta["pitch_rows"], corpus.meta["pitch_levels"], corpus.meta["n_q"]) == (1, 8, 2)
    assert corpus.entry("sample_001").num_samples == 7 * 320
    assert np.array_equal(np.asarray(corpus["sample_001"]), codes[1].numpy())
    prior.check_tokens(corpus.meta)  # prior eval takes them: same tokenizer hash and geometry

    # a prior that does not record its rows, whose tokenizer is nowhere: no pitch row, and a warning says so
    files = write_samples(tmp_path / "bare", codes, tiny_prior(config), None, {})
    assert load_tokens(files.tokens).meta["pitch_rows"] == 0
    assert "was not found" in caplog.text


def test_recipes_load_and_build() -> None:
    tiny = load_yaml(RECIPES / "prior_tiny.yaml", PriorRunConfig)
    small = load_yaml(RECIPES / "prior_small.yaml", PriorRunConfig)
    tiny_model = WaveNetPrior(
        PriorConfig(**{**tiny.prior.__dict__, "num_codebooks": 8, "codebook_size": 1024})
    )
    assert tiny_model.receptive_field == 16
    small_config = PriorConfig(**{**small.prior.__dict__, "num_codebooks": 8, "codebook_size": 1024})
    trunk = sum(p.numel() for p in WaveNetPrior(small_config).layers.parameters())
    assert 1e6 < trunk < 3e6 and receptive_field(small_config) == 511
    default = load_yaml(RECIPES / "prior_default.yaml", PriorRunConfig)
    default_config = PriorConfig(**{**default.prior.__dict__, "num_codebooks": 8, "codebook_size": 1024})
    parameters = sum(p.numel() for p in WaveNetPrior(default_config).parameters())
    assert 2 * parameters < 5.5e6, "the embedded prior ships as float16: at most ~5.5 MB"
