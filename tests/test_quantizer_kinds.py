"""The codebook kinds (model.quantizer.codebook: vq, gumbel, fsq) in both layouts: gradients, code ranges, FSQ's
mixed-radix codes, the Gumbel temperature schedule and sampling, round trips, configs and recipes, short training
runs and exact resume."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_config, make_tiny_tokenizer
from safetensors.torch import load_file, save_file
from test_training import state_dicts_equal, tiny_training_config, write_corpus

from vqaudio.codec.quantization import (
    Codebook,
    CodebookOptions,
    FiniteScalarQuantizer,
    GroupVQ,
    GumbelQuantizer,
    Quantizer,
    ResidualVQ,
    VectorQuantizer,
    build_codebook,
    build_quantizer,
    gumbel_temperature,
)
from vqaudio.codec.quantization.gumbel import usage_kl_to_uniform
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.codec.training import train_tokenizer
from vqaudio.config import Config, ConfigError, QuantizerConfig, load_yaml, replace_path
from vqaudio.data.corpus import Utterance
from vqaudio.evaluation.codebook_stats import CodebookUsage
from vqaudio.io.audio import load_audio
from vqaudio.training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from vqaudio.training.logs import read_metrics

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

# One option set per kind, 16 codes each (fsq: 4 x 4 levels).
OPTIONS = {
    "vq": CodebookOptions(codebook="vq", codebook_size=16),
    "gumbel": CodebookOptions(codebook="gumbel", codebook_size=16, gumbel_anneal_steps=100),
    "fsq": CodebookOptions(codebook="fsq", codebook_size=16, fsq_levels=(4, 4)),
}
LAYOUTS: dict[str, Callable[[CodebookOptions], Quantizer]] = {
    "single": lambda options: build_codebook(8, options),
    "residual": lambda options: ResidualVQ(8, 3, options, quantizer_dropout=0.0),
    "group": lambda options: GroupVQ(8, 2, options),
}
KINDS_AND_LAYOUTS = [(kind, layout) for kind in OPTIONS for layout in LAYOUTS]


def latents(batch: int = 4, dim: int = 8, frames: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, dim, frames, generator=torch.Generator().manual_seed(seed))


def trained(quantizer: Quantizer, steps: int = 3) -> Quantizer:
    """A few training-mode forwards (first-batch initialisation, EMA), then eval mode."""
    quantizer.train()
    for step in range(steps):
        quantizer(latents(batch=8, seed=10 + step))
    return quantizer.eval()


def codebooks_of(quantizer: Quantizer) -> list[Codebook]:
    return [module for module in quantizer.modules() if isinstance(module, Codebook)]


# --------------------------------------------------------------------------------------------------
# Every kind in every layout
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "layout"), KINDS_AND_LAYOUTS)
def test_gradients_reach_the_encoder_and_every_codebook(kind: str, layout: str) -> None:
    """Through the straight-through estimators, a loss on the quantized latent reaches an encoder in front
    of the quantizer, and every stage's or group's trainable weights (Gumbel: logits and code vectors; FSQ:
    both projections; vq: the EMA codebook has none)."""
    torch.manual_seed(0)
    encoder = torch.nn.Conv1d(8, 8, kernel_size=1)
    quantizer = trained(LAYOUTS[layout](OPTIONS[kind]), steps=1).train()
    z = encoder(latents(seed=3))
    out = quantizer(z)
    target = latents(seed=4)
    ((out.quantized - target).pow(2).mean() + out.loss).backward()
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0
    for codebook in codebooks_of(quantizer):
        for name, parameter in codebook.named_parameters():
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    if kind == "vq":
        return  # EMA codes: nothing of the codebook learns by gradient
    # a frozen encoder (train.freeze: [encoder]): the codebooks still learn
    quantizer.zero_grad()
    out = quantizer(latents(seed=3))
    ((out.quantized - target).pow(2).mean() + out.loss).backward()
    for codebook in codebooks_of(quantizer):
        for name, parameter in codebook.named_parameters():
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("kind", "layout"), KINDS_AND_LAYOUTS)
def test_codes_are_in_range_in_training_and_eval_even_for_extreme_latents(kind: str, layout: str) -> None:
    torch.manual_seed(0)
    quantizer = trained(LAYOUTS[layout](OPTIONS[kind]))
    for scale in (1e-6, 1.0, 1e4):  # near ties, ordinary, saturating (FSQ's tanh at +-1)
        z = latents(seed=5) * scale
        for mode in (True, False):
            quantizer.train(mode)
            codes = quantizer(z).codes
            assert codes.dtype == torch.int64 and codes.shape == (4, quantizer.num_codebooks, 16)
            assert 0 <= int(codes.min()) and int(codes.max()) < 16, (scale, mode)


@pytest.mark.parametrize(("kind", "layout"), KINDS_AND_LAYOUTS)
def test_eval_decode_of_encode_equals_forward_and_the_latent_codebooks(kind: str, layout: str) -> None:
    torch.manual_seed(0)
    quantizer = trained(LAYOUTS[layout](OPTIONS[kind]))
    z = latents(seed=9)
    codes = quantizer.encode(z)
    out = quantizer(z)
    assert torch.equal(out.codes, codes)
    assert torch.equal(quantizer.decode(codes), out.quantized)
    assert torch.equal(quantizer.decode(codes.to(torch.int16)), out.quantized)  # token files hold int16
    # without autograd (encoding, validation) the straight-through terms are skipped: the same value
    with torch.no_grad():
        assert torch.equal(quantizer(z).quantized, out.quantized)
    # decode is the sum over codebooks of latent_codebooks()[k, code_k] (what tokenizer.codebooks promises)
    vectors = quantizer.latent_codebooks()
    assert vectors.shape == (quantizer.num_codebooks, 16, 8)
    summed = sum(vectors[k][codes[:, k]] for k in range(quantizer.num_codebooks))  # [B, F, D]
    torch.testing.assert_close(summed.transpose(1, 2), out.quantized)
    assert quantizer.codebooks().shape[:2] == (quantizer.num_codebooks, 16)


@pytest.mark.parametrize("kind", ["gumbel", "fsq"])
def test_residual_stages_truncate_and_strict_state_dict_round_trip(kind: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = trained(ResidualVQ(8, 3, OPTIONS[kind]))
    z = latents(seed=2)
    codes = original.encode(z)
    for n_q in (1, 2):  # the first n_q stages alone: a valid coarser decode, the stages' codes unchanged
        assert torch.equal(original.encode(z, n_q=n_q), codes[:, :n_q])
        assert torch.equal(original.decode(codes[:, :n_q]), original(z, n_q=n_q).quantized)
    save_file(original.state_dict(), str(tmp_path / "q.safetensors"))
    torch.manual_seed(1)
    loaded = ResidualVQ(8, 3, OPTIONS[kind])
    loaded.load_state_dict(load_file(str(tmp_path / "q.safetensors")), strict=True)
    loaded.eval()
    assert torch.equal(loaded.encode(z), codes) and torch.equal(loaded(z).quantized, original(z).quantized)
    # the first-batch initialisation is saved: a loaded model does not redo it when training goes on
    assert all(bool(stage.initialized) for stage in loaded.stages)


def test_state_dict_keys_of_the_new_kinds_are_stable() -> None:
    """Released models load with strict=True: these names are a file format (FSQ's levels are not weights)."""
    gumbel = build_quantizer(8, QuantizerConfig(codebook="gumbel", num_codebooks=2, codebook_size=4))
    stage = ["codebook", "initialized", "to_logits.bias", "to_logits.weight"]
    assert sorted(gumbel.state_dict()) == sorted(f"stages.{i}.{name}" for i in range(2) for name in stage)
    fsq = build_quantizer(
        8, QuantizerConfig(kind="group", codebook="fsq", num_codebooks=2, codebook_size=6, fsq_levels=(2, 3))
    )
    group = ["initialized", "project_in.bias", "project_in.weight", "project_out.bias", "project_out.weight"]
    assert sorted(fsq.state_dict()) == sorted(f"groups.{i}.{name}" for i in range(2) for name in group)


def test_layouts_build_the_configured_kind_and_keep_the_entropy_rule() -> None:
    for codebook, cls in (("vq", VectorQuantizer), ("gumbel", GumbelQuantizer)):
        rvq = build_quantizer(
            8, QuantizerConfig(codebook=codebook, num_codebooks=3, usage_entropy_weight=0.1)
        )
        assert isinstance(rvq, ResidualVQ) and all(isinstance(stage, cls) for stage in rvq.stages)
        weights = [stage.options.usage_entropy_weight for stage in rvq.stages]
        # vq: the first stage only (its penalty grows as residuals shrink); gumbel: every stage's logits
        assert weights == ([0.1, 0.0, 0.0] if codebook == "vq" else [0.1, 0.1, 0.1])
    gvq = build_quantizer(
        8,
        QuantizerConfig(
            kind="group", codebook="fsq", num_codebooks=2, codebook_size=1000, fsq_levels=(8, 5, 5, 5)
        ),
    )
    assert isinstance(gvq, GroupVQ) and all(isinstance(group, FiniteScalarQuantizer) for group in gvq.groups)
    assert gvq.codebook_size == 1000 and gvq.codebooks().shape == (2, 1000, 4)


# --------------------------------------------------------------------------------------------------
# FSQ
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [(8, 8, 4, 4), (8, 5, 5, 5), (2, 3), (7,)])
def test_fsq_codes_and_level_vectors_map_one_to_one(levels: tuple[int, ...]) -> None:
    """Mixed radix: code = sum_i digit_i * prod_{j<i} L_j; every code's digits are in range, and code ->
    digits -> code is the identity over the whole codebook (brute force)."""
    size = math.prod(levels)
    fsq = FiniteScalarQuantizer(8, CodebookOptions(codebook="fsq", codebook_size=size, fsq_levels=levels))
    codes = torch.arange(size)
    digits = fsq._digits(codes)  # [C, d]
    assert torch.equal(fsq._codes(digits.float()), codes)
    for index, level in enumerate(levels):
        assert set(digits[:, index].tolist()) == set(range(level))
    expected = sum(digits[:, i] * math.prod(levels[:i]) for i in range(len(levels)))
    assert torch.equal(expected, codes)
    grid = fsq.codebooks()[0]  # [C, d] level vectors on [-1, 1]
    assert grid.shape == (size, len(levels)) and len(torch.unique(grid, dim=0)) == size
    assert grid.min() == -1 and grid.max() == 1
    # each dimension's levels are L equal steps over [-1, 1]
    for index, level in enumerate(levels):
        assert torch.allclose(torch.unique(grid[:, index]), torch.linspace(-1, 1, level), atol=1e-6)


def test_fsq_rounds_each_dimension_to_the_nearest_level() -> None:
    """With identity projections, a latent's code is its dimensions squashed by tanh and rounded: check
    against a brute-force nearest level per dimension."""
    levels = (5, 4)
    fsq = FiniteScalarQuantizer(
        2, CodebookOptions(codebook="fsq", codebook_size=20, fsq_levels=levels)
    ).eval()
    with torch.no_grad():
        for linear in (fsq.project_in, fsq.project_out):
            linear.weight.copy_(torch.eye(2))
            linear.bias.zero_()
    z = latents(batch=2, dim=2, frames=50, seed=1) * 2
    codes = fsq.encode(z)[:, 0]  # [B, F]
    frames = z.transpose(1, 2).reshape(-1, 2)
    expected = torch.zeros(frames.shape[0], dtype=torch.long)
    for index, level in enumerate(levels):
        half = (level - 1) / 2
        points = torch.arange(level) - half  # the grid in the bounded space
        digit = (half * torch.tanh(frames[:, index : index + 1]) - points).abs().argmin(dim=1)
        expected += digit * math.prod(levels[:index])
    assert torch.equal(codes.reshape(-1), expected)
    # and decode gives the level vector itself (identity projection)
    decoded = fsq.decode(codes[:, None]).transpose(1, 2).reshape(-1, 2)
    assert torch.equal(decoded, fsq.codebooks()[0][expected])


def test_fsq_codebook_size_must_equal_the_product_of_the_levels(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"prod\(fsq_levels\) = 8 x 5 x 5 x 5 = 1000 codes, but codebook_size is 1024"
    ):
        CodebookOptions(codebook="fsq", codebook_size=1024, fsq_levels=(8, 5, 5, 5))
    with pytest.raises(ValueError, match="every fsq_levels entry must be at least 2"):
        CodebookOptions(codebook="fsq", codebook_size=4, fsq_levels=(4, 1))
    CodebookOptions(codebook="vq", codebook_size=1024, fsq_levels=(8, 5, 5, 5))  # another kind's: not checked
    with pytest.raises(ValueError, match="expects CodebookOptions\\(codebook='fsq'"):
        FiniteScalarQuantizer(8, CodebookOptions(codebook_size=16, fsq_levels=(4, 4)))
    # a recipe: one line naming the field, the product and the fix
    recipe = tmp_path / "fsq.yaml"
    recipe.write_text(
        "base: " + str(RECIPES / "tiny.yaml") + "\nmodel:\n  quantizer:\n    codebook: fsq\n"
        "    fsq_levels: [8, 5, 5, 5]\n"
    )
    config = load_yaml(recipe)  # field by field it is fine; the fit is checked with the model's
    with pytest.raises(ConfigError) as caught:
        config.model.validate()
    message = str(caught.value)
    assert "model.quantizer.codebook: fsq makes prod(fsq_levels) = 8 x 5 x 5 x 5 = 1000 codes" in message
    assert "codebook_size is 128" in message and "set codebook_size: 1000" in message and "\n" not in message


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"codebook": "fsq", "fsq_levels": [4, 4], "codebook_size": 16, "codebook_dim": 2}, "codebook_dim"),
        (
            {"codebook": "fsq", "fsq_levels": [4, 4], "codebook_size": 16, "usage_entropy_weight": 0.1},
            "usage_entropy_weight",
        ),
        ({"codebook": "gumbel", "codebook_dim": 4}, r"codebook_dim \(factorised codes\) is for codebook: vq"),
    ],
)
def test_settings_of_another_kind_are_refused(changes: dict[str, object], needle: str) -> None:
    config = make_tiny_config()
    for key, value in changes.items():
        config = replace_path(config, f"model.quantizer.{key}", value)
    with pytest.raises(ConfigError, match=needle):
        config.model.validate()


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("fsq_levels", [8, 1], "model.quantizer.fsq_levels: 1 is outside the allowed range [2, 65536]"),
        ("fsq_levels", [2] * 17, "17 items, more than the 16 allowed"),
        (
            "gumbel_temperature_start",
            0.0,
            "gumbel_temperature_start: 0.0 is outside the allowed range [0.01, 100]",
        ),
        ("gumbel_anneal_steps", 0, "gumbel_anneal_steps: 0 is outside"),
        ("codebook", "kmeans", "expected one of ['vq', 'gumbel', 'fsq']"),
        ("gumbel_anneal", "linear", "expected one of ['exponential', 'cosine']"),
    ],
)
def test_quantizer_settings_are_range_checked(key: str, value: object, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        replace_path(Config(), f"model.quantizer.{key}", value)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


# --------------------------------------------------------------------------------------------------
# Gumbel
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("anneal", ["exponential", "cosine"])
def test_gumbel_temperature_follows_the_schedule_formula(anneal: str) -> None:
    options = CodebookOptions(
        codebook="gumbel",
        codebook_size=16,
        gumbel_temperature_start=0.5,
        gumbel_temperature_end=0.1,
        gumbel_anneal_steps=1000,
        gumbel_anneal=anneal,  # fmt: skip
    )

    def formula(step: int) -> float:
        progress = min(step, 1000) / 1000
        if anneal == "exponential":
            return 0.5 * 0.2**progress
        return 0.1 + 0.4 * (1 + math.cos(math.pi * progress)) / 2

    for step in (0, 1, 250, 500, 999, 1000, 5000):
        assert gumbel_temperature(step, options) == pytest.approx(formula(step), rel=1e-12), step
    assert gumbel_temperature(0, options) == pytest.approx(0.5) and gumbel_temperature(
        10**6, options
    ) == pytest.approx(0.1)
    assert gumbel_temperature(500, options) == pytest.approx(
        0.5 * math.sqrt(0.2) if anneal == "exponential" else 0.3
    )
    temperatures = [gumbel_temperature(step, options) for step in range(0, 1001, 50)]
    assert all(a > b for a, b in zip(temperatures, temperatures[1:], strict=False))
    # the layouts pass the trainer's step to every codebook
    rvq = ResidualVQ(8, 3, options)
    rvq.set_training_step(500)
    assert all(stage.temperature == gumbel_temperature(500, options) for stage in rvq.stages)
    with pytest.raises(ValueError, match="step count >= 0"):
        rvq.set_training_step(-1)


def test_gumbel_temperature_shapes_the_gradient_not_the_codes() -> None:
    """The same noise draws the same codes at any temperature; a lower temperature sharpens the soft sample,
    so the gradient w.r.t. the logits concentrates on fewer codes."""
    quantizer = trained(GumbelQuantizer(8, OPTIONS["gumbel"])).train()
    z = latents(seed=1)
    codes, grads = [], []
    for step in (0, 100):  # tau 0.5, then 0.1
        quantizer.set_training_step(step)
        quantizer.zero_grad()
        torch.manual_seed(7)
        out = quantizer(z.clone().requires_grad_(True))
        out.quantized.sum().backward()
        codes.append(out.codes)
        grads.append(quantizer.to_logits.bias.grad.clone())
    assert torch.equal(codes[0], codes[1])
    assert not torch.allclose(grads[0], grads[1])


def test_gumbel_codes_are_deterministic_in_eval_and_sampled_from_the_softmax_in_training() -> None:
    torch.manual_seed(0)
    quantizer = trained(GumbelQuantizer(8, OPTIONS["gumbel"]))
    z = latents(seed=3)
    first, second = quantizer(z).codes, quantizer(z).codes
    assert torch.equal(first, second) and torch.equal(first, quantizer.encode(z))
    logits = quantizer.to_logits(z.transpose(1, 2).reshape(-1, 8))
    assert torch.equal(first.reshape(-1), logits.argmax(dim=1))  # eval: the most likely code
    quantizer.train()
    assert not torch.equal(quantizer(z).codes, quantizer(z).codes)  # training: drawn
    # Gumbel-max draws code k with probability softmax(logits)_k: fixed logits, 20,000 frames
    with torch.no_grad():
        quantizer.to_logits.weight.zero_()
        quantizer.to_logits.bias.copy_(torch.linspace(-2, 2, 16))
    draws = quantizer(torch.zeros(1, 8, 20000)).codes.reshape(-1)
    frequencies = torch.bincount(draws, minlength=16).double() / draws.numel()
    expected = torch.softmax(torch.linspace(-2, 2, 16).double(), dim=0)
    assert (frequencies - expected).abs().max() < 0.01  # about 4 standard errors of the largest one


def test_gumbel_usage_penalty_is_the_kl_of_the_mean_distribution_to_uniform() -> None:
    uniform = torch.zeros(10, 4)
    assert usage_kl_to_uniform(uniform).item() == pytest.approx(0.0, abs=1e-7)
    collapsed = torch.tensor([[20.0, 0.0, 0.0, 0.0]]).repeat(10, 1)
    assert usage_kl_to_uniform(collapsed).item() == pytest.approx(math.log(4), abs=1e-6)
    # frames that quantizer dropout excludes do not count
    mixed = torch.cat([uniform, collapsed])
    weights = torch.cat([torch.ones(10), torch.zeros(10)])
    assert usage_kl_to_uniform(mixed, weights).item() == pytest.approx(0.0, abs=1e-7)
    quantizer = GumbelQuantizer(8, dataclasses.replace(OPTIONS["gumbel"], usage_entropy_weight=0.5)).train()
    assert quantizer(latents()).loss > 0
    assert GumbelQuantizer(8, OPTIONS["gumbel"]).train()(latents()).loss == 0


def test_first_training_batch_spreads_an_offset_latent_over_the_codes() -> None:
    """An untrained encoder's latents share a large offset; the first training batch standardises the input
    maps, so FSQ and Gumbel codebooks use many codes from the start (without it, a handful)."""
    z = latents(batch=8, frames=32, seed=4) * 0.2 + 3.0
    for kind in ("gumbel", "fsq"):
        torch.manual_seed(0)
        quantizer = build_codebook(8, OPTIONS[kind]).eval()
        before = len(quantizer.encode(z).unique())
        quantizer.train()(z)
        after = len(quantizer.eval().encode(z).unique())
        assert bool(quantizer.initialized) and after >= 12 and after > 2 * before, (kind, before, after)


# --------------------------------------------------------------------------------------------------
# Tokenizer and training
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["gumbel", "fsq"])
def test_tokenizer_saves_and_loads_every_kind(kind: str, tmp_path: Path) -> None:
    config = make_tiny_config()
    config = replace_path(config, "model.quantizer.codebook", kind)
    if kind == "fsq":
        config = replace_path(config, "model.quantizer.fsq_levels", [4, 4])
    tokenizer = make_tiny_tokenizer(config=config, name=kind)
    tokenizer.save(tmp_path / kind)
    loaded = Tokenizer.load(tmp_path / kind)
    assert loaded.config.model.quantizer.codebook == kind and loaded.hash == tokenizer.hash
    wav = torch.randn(8000) * 0.1
    codes = loaded.encode(wav, 16000)
    assert torch.equal(codes, tokenizer.encode(wav, 16000)) and int(codes.max()) < 16
    assert torch.equal(loaded.decode(codes), tokenizer.decode(codes))
    assert loaded.codebooks.shape == (3, 16, 8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Utterance], list[Utterance]]:
    utterances = write_corpus(tmp_path_factory.mktemp("kinds"), 11, seconds=0.6)
    return utterances[:10], utterances[10:]


def kind_config(kind: str, **changes: object) -> Config:
    """The tiny training recipe (4 x 32 codes) with ``kind`` codebooks, at the real recipes' learning rate
    (at tiny.yaml's 4e-3 FSQ's latents outgrew the tanh and every stage saturated to one code)."""
    settings: dict[str, object] = {"model.quantizer.codebook": kind, "train.learning_rate": 1e-3}
    if kind == "fsq":
        settings["model.quantizer.fsq_levels"] = [4, 8]
    if kind == "gumbel":  # the diversity term the gumbel recipe has (without it every stage used one code)
        settings["model.quantizer.usage_entropy_weight"] = 0.1
        settings["model.quantizer.gumbel_anneal_steps"] = 60
    return tiny_training_config(**{**settings, **changes})


@pytest.mark.parametrize("kind", ["vq", "gumbel", "fsq"])
def test_a_short_run_of_every_kind_learns_and_uses_its_codes(
    kind: str, tmp_path: Path, corpus: tuple[list[Utterance], list[Utterance]]
) -> None:
    """60 steps of 8 x 0.25 s crops (about 4 s each on one core). Measured (the reconstruction part of the
    loss, mean of steps 1-10 -> 51-60; codes each codebook uses on the 6 s of training audio, of 32): vq 4.05 ->
    2.95 (26-31 codes), gumbel 4.16 -> 3.11 (23-28), fsq 3.61 -> 2.94 (5-17; FSQ's later residual stages
    saturate their tanh early on). The bounds: a 10% cut, and no codebook down to fewer than 3 codes."""
    config = kind_config(kind, **{"train.max_steps": 60, "train.validate_every": 60})
    train_tokenizer(config, *corpus, tmp_path / "run", progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    training = [row for row in rows if row["kind"] == "train"]
    first, last = training[0], training[-1]
    reconstruction = [row["loss"] - row["quantizer"] for row in (first, last)]
    assert reconstruction[1] <= 0.9 * reconstruction[0]
    tokenizer = Tokenizer.load(tmp_path / "run")
    usage = CodebookUsage(tokenizer.num_codebooks, tokenizer.codebook_size)
    for utterance in corpus[0]:
        usage.update(tokenizer.model.encode(load_audio(utterance.path, 16000)[None]))
    used = [round(value * 32) for value in usage.summary().usage.tolist()]
    print(f"{kind}: loss {reconstruction[0]:.3f} -> {reconstruction[1]:.3f}, codes used {used} of 32")
    assert min(used) >= 3, used
    if kind == "gumbel":  # the temperature logged is the schedule's at the last step of each window
        options = CodebookOptions.from_config(config.model.quantizer)
        assert [row["gumbel_temperature"] for row in training] == [
            gumbel_temperature(row["step"] - 1, options) for row in training
        ]
        assert training[-1]["gumbel_temperature"] == pytest.approx(0.5 * 0.2 ** (59 / 60))
    else:
        assert "gumbel_temperature" not in last


@pytest.mark.parametrize("kind", ["gumbel", "fsq"])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(
    kind: str, tmp_path: Path, corpus: tuple[list[Utterance], list[Utterance]]
) -> None:
    """The Gumbel temperature and noise follow the global step (a counter inside the module, reset by the
    resume, would anneal differently): a run stopped at step 6 and resumed ends bit-identical."""
    config = kind_config(
        kind, **{"train.max_steps": 12, "train.log_every": 2, "model.quantizer.gumbel_anneal_steps": 12}
    )
    straight = train_tokenizer(config, *corpus, tmp_path / "straight", progress=False)
    train_tokenizer(config, *corpus, tmp_path / "resumed", until_step=6, progress=False)
    second = train_tokenizer(config, *corpus, tmp_path / "resumed", progress=False)
    assert (second.start_step, second.step, straight.step) == (6, 12, 12)
    a = load_checkpoint(tmp_path / "straight" / CHECKPOINT_FILE)
    b = load_checkpoint(tmp_path / "resumed" / CHECKPOINT_FILE)
    assert state_dicts_equal(a["model"], b["model"]) == []
    rows = [read_metrics(tmp_path / name / "metrics.jsonl") for name in ("straight", "resumed")]
    logged = [
        [(r["step"], r["loss"], r.get("gumbel_temperature")) for r in run if r["kind"] == "train"]
        for run in rows
    ]
    assert logged[0] == logged[1] and [step for step, _, _ in logged[0]] == [2, 4, 6, 8, 10, 12]
    # the released model: argmax codes, no training statistics, loads strictly
    tokenizer = Tokenizer.load(tmp_path / "resumed")
    assert tokenizer.config.model.quantizer.codebook == kind


def test_recipes_of_the_new_kinds_are_rvq_mel_pitch_plus_the_quantizer() -> None:
    base = load_yaml(RECIPES / "rvq_mel_pitch.yaml")
    for name, kind in (("rvq_mel_pitch_fsq", "fsq"), ("rvq_mel_pitch_gumbel", "gumbel")):
        config = load_yaml(RECIPES / f"{name}.yaml")
        config.model.validate()
        assert config.model.quantizer.codebook == kind
        # everything but the quantizer is rvq_mel_pitch's
        assert dataclasses.replace(config.model, quantizer=base.model.quantizer) == base.model
        assert (config.loss, config.train) == (base.loss, base.train)
    gumbel = load_yaml(RECIPES / "rvq_mel_pitch_gumbel.yaml")
    assert gumbel.model.quantizer.gumbel_anneal_steps == gumbel.train.max_steps
    fsq = load_yaml(RECIPES / "rvq_mel_pitch_fsq.yaml").model.quantizer
    assert math.prod(fsq.fsq_levels) == fsq.codebook_size == 1000
