"""Quantizers: nearest-code search, gradients, codebook maintenance, RVQ/group invariants, DDP sync."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from vqaudio.codec.quantization import (
    CodebookOptions,
    GroupVQ,
    Quantizer,
    ResidualVQ,
    VectorQuantizer,
    build_quantizer,
)
from vqaudio.codec.quantization.vq import usage_entropy_penalty
from vqaudio.config import QuantizerConfig


def latents(batch: int = 4, dim: int = 8, frames: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, dim, frames, generator=torch.Generator().manual_seed(seed))


def frames_of(z: torch.Tensor) -> torch.Tensor:
    """[B, D, F] -> [B * F, D], the row order the quantizers use."""
    return z.transpose(1, 2).reshape(-1, z.shape[1])


def fixed_codebook_options(codebook_size: int) -> CodebookOptions:
    """Codebooks that do not change during forward: no EMA, no k-means, no restarts."""
    return CodebookOptions(codebook_size=codebook_size, ema=False, kmeans_init=False, dead_code_steps=0)


# --------------------------------------------------------------------------------------------------
# VectorQuantizer
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("codebook_dim", [None, 3], ids=["plain", "factorised"])
def test_nearest_code_equals_brute_force_search(codebook_dim: int | None) -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(
        8, CodebookOptions(codebook_size=64, codebook_dim=codebook_dim, kmeans_init=False)
    ).eval()
    z = latents(batch=3, frames=50)

    def brute_force(vq: VectorQuantizer, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = frames_of(z)
        if vq.project_in is not None:
            x = F.normalize(vq.project_in(x), dim=1)
        distances = torch.cdist(x, vq.codebooks()[0], compute_mode="donot_use_mm_for_euclid_dist")
        return distances, distances.argmin(dim=1)

    with torch.no_grad():
        # float64: no near-ties, so the indices themselves must agree
        vq64 = vq.double()
        _, expected = brute_force(vq64, z.double())
        assert torch.equal(vq64.encode(z.double())[:, 0].reshape(-1), expected)
        # float32: the chosen code is at the minimal distance (ties within rounding may pick either)
        vq32 = vq.float()
        distances, _ = brute_force(vq32, z)
        chosen = vq32.encode(z)[:, 0].reshape(-1)
        chosen_distance = distances.gather(1, chosen[:, None])[:, 0]
        torch.testing.assert_close(chosen_distance, distances.min(dim=1).values, rtol=1e-5, atol=1e-5)


def test_straight_through_gradient_reaches_input_unchanged() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(8, fixed_codebook_options(16)).train()
    z = latents().requires_grad_()
    out = vq(z)
    upstream = torch.randn_like(z)
    (grad,) = torch.autograd.grad(out.quantized, z, upstream)
    assert torch.equal(grad, upstream)
    # and the quantized value is the code vectors themselves
    assert torch.equal(out.quantized.detach(), vq.codebook.detach()[out.codes[:, 0]].transpose(1, 2))
    (loss_grad,) = torch.autograd.grad(out.loss, z)
    assert loss_grad.abs().sum() > 0  # the commitment loss pulls the encoder toward its codes


def test_residual_vq_output_has_one_straight_through_gradient() -> None:
    """However many stages an example uses, d(quantized)/dz is the identity (not n_q times it)."""
    torch.manual_seed(0)
    rvq = ResidualVQ(
        8, 4, CodebookOptions(codebook_size=16, kmeans_init=False), quantizer_dropout=0.5
    ).train()
    z = latents(batch=16).requires_grad_()
    upstream = torch.randn_like(z)
    (grad,) = torch.autograd.grad(rvq(z).quantized, z, upstream)
    assert torch.equal(grad, upstream)


def test_ema_moves_codes_toward_their_assigned_vectors() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(
        4, CodebookOptions(codebook_size=8, ema_decay=0.9, kmeans_init=False, dead_code_steps=0)
    )
    z = latents(dim=4, frames=32)
    x = frames_of(z)

    def code_to_mean_distances(vq: VectorQuantizer) -> dict[int, float]:
        codes = vq.eval().encode(z)[:, 0].reshape(-1)
        return {
            int(code): float((vq.codebook[code] - x[codes == code].mean(dim=0)).norm())
            for code in codes.unique()
        }

    before = code_to_mean_distances(vq)
    assignment = vq.encode(z)[:, 0].reshape(-1)
    vq.train()(z)
    for code, distance in before.items():
        mean = x[assignment == code].mean(dim=0)
        assert float((vq.codebook[code] - mean).norm()) < distance
    for _ in range(60):  # Lloyd iterations by EMA: codes converge to the means of their cells
        vq.train()(z)
    after = code_to_mean_distances(vq)
    assert max(after.values()) < 0.05 * max(before.values())


def test_dead_codes_are_restarted_on_input_vectors_and_then_used() -> None:
    torch.manual_seed(0)
    dead_code_steps = 3
    vq = VectorQuantizer(
        4, CodebookOptions(codebook_size=16, kmeans_init=False, dead_code_steps=dead_code_steps)
    )
    with torch.no_grad():  # codes 8..15 are far from every input: never chosen
        vq.codebook[8:] += 100.0
        vq.ema_sum.copy_(vq.codebook)
    z = latents(batch=8, dim=4, frames=32)
    x = frames_of(z)
    vq.train()
    for _ in range(dead_code_steps):
        vq(z)
    assert vq.codebook[8:].norm(dim=1).min() > 50  # not yet: unused for exactly dead_code_steps steps
    assert torch.equal(vq.steps_unused[8:], torch.full((8,), dead_code_steps))
    vq(z)  # restarted at the start of this step, then used (and EMA-updated) in it
    distance_to_nearest_input = torch.cdist(vq.codebook[8:], x).min(dim=1).values
    assert distance_to_nearest_input.max() < 0.5
    used = vq.eval().encode(z).unique()
    assert set(range(8, 16)) <= set(used.tolist())


def test_usage_entropy_penalty_spreads_frames_over_the_codes() -> None:
    """Codes evenly spaced on a line, inputs crowded at its middle: the penalty moves the inputs (the encoder's
    side) so that the outer codes get used too, and the perplexity of the hard assignments rises, while a
    pull towards the original inputs (standing for the reconstruction loss) keeps them near where they were."""
    generator = torch.Generator().manual_seed(0)
    original = torch.randn(8, 2, 64, generator=generator) * torch.tensor([0.3, 0.05])[None, :, None]
    codebook = torch.stack([torch.linspace(-3.0, 3.0, 16), torch.zeros(16)], dim=1)

    def perplexity_after_training(weight: float) -> tuple[float, float]:
        vq = VectorQuantizer(2, dataclasses.replace(fixed_codebook_options(16), usage_entropy_weight=weight))
        with torch.no_grad():
            vq.codebook.copy_(codebook)
        z = torch.nn.Parameter(original.clone())
        optimizer = torch.optim.Adam([z], lr=0.01)
        vq.train()
        for _ in range(300):
            optimizer.zero_grad()
            loss = vq(z).loss + (z - original).pow(2).mean()
            loss.backward()
            optimizer.step()
        counts = torch.bincount(vq.eval().encode(z.detach()).reshape(-1), minlength=16).double()
        p = counts[counts > 0] / counts.sum()
        return float(torch.exp(-(p * p.log()).sum())), float((z.detach() - original).abs().mean())

    without, _ = perplexity_after_training(0.0)
    with_penalty, moved = perplexity_after_training(0.3)
    assert without < 4  # the inputs span about 4 of the 16 codes (measured 3.4)
    assert with_penalty > 1.8 * without  # measured 7.2
    assert moved < 0.3  # spread, not scattered: the codes are 0.4 apart (measured 0.16)
    # the penalty's range, and that only frames with weight 1 count
    x = torch.randn(32, 2, generator=generator)
    penalty = usage_entropy_penalty(x, codebook)
    assert 0.0 <= penalty <= torch.log(torch.tensor(16.0))
    assert usage_entropy_penalty(codebook, codebook) < 0.01  # each code's own vector: uniform usage
    weights = torch.cat([torch.ones(16), torch.zeros(16)])
    assert torch.allclose(
        usage_entropy_penalty(x, codebook, weights), usage_entropy_penalty(x[:16], codebook)
    )
    # with EMA codes, which the training forward rewrites in place, the backward pass still runs
    ema_vq = VectorQuantizer(2, CodebookOptions(codebook_size=16, usage_entropy_weight=0.3)).train()
    z = torch.nn.Parameter(original.clone())
    ema_vq(z).loss.backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_usage_entropy_penalty_is_zero_when_every_frame_sits_on_a_twinned_code() -> None:
    """k-means seeded from fewer frames than codes gives codes twins and puts frames on them: no gap between
    the nearest and the second-nearest code, so no temperature. The penalty is then 0 with a zero gradient;
    it was inf (rvq_mel_pitch at 2 crops per process stopped on its first step)."""
    generator = torch.Generator().manual_seed(0)
    frames = torch.randn(10, 4, generator=generator)
    x = frames.clone().requires_grad_()
    penalty = usage_entropy_penalty(x, torch.cat([frames, frames]))
    penalty.backward()
    assert penalty == 0 and x.grad is not None and torch.equal(x.grad, torch.zeros_like(x))
    # through the quantizer: a first batch of 10 frames for 64 codes (the gradient was 1.9e22)
    vq = VectorQuantizer(4, CodebookOptions(codebook_size=64, usage_entropy_weight=0.1)).train()
    z = torch.nn.Parameter(torch.randn(1, 4, 10, generator=generator))
    vq(z).loss.backward()
    assert z.grad is not None and z.grad.abs().max() < 1.0
    with pytest.raises(ValueError, match="usage_entropy_weight=-1"):
        CodebookOptions(usage_entropy_weight=-1.0)


def test_without_restarts_dead_codes_stay_dead() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(4, CodebookOptions(codebook_size=16, kmeans_init=False, dead_code_steps=0))
    with torch.no_grad():
        vq.codebook[8:] += 100.0
        vq.ema_sum.copy_(vq.codebook)
    z = latents(batch=8, dim=4, frames=32)
    for _ in range(5):
        vq.train()(z)
    assert vq.eval().encode(z).max() < 8


def test_kmeans_init_lowers_quantization_error() -> None:
    generator = torch.Generator().manual_seed(0)
    centers = 4.0 * torch.randn(16, 8, generator=generator)
    x = centers[torch.randint(16, (512,), generator=generator)] + 0.1 * torch.randn(
        512, 8, generator=generator
    )
    z = x.reshape(8, 64, 8).transpose(1, 2)  # [B=8, D=8, F=64]

    def error_after_first_batch(kmeans_init: bool) -> float:
        torch.manual_seed(0)
        vq = VectorQuantizer(
            8, CodebookOptions(codebook_size=16, ema=False, kmeans_init=kmeans_init, dead_code_steps=0)
        )
        vq.train()(z)
        assert bool(vq.initialized)
        vq.eval()
        with torch.no_grad():
            return float((vq.decode(vq.encode(z)) - z).pow(2).mean())

    # Lloyd from random seeds may merge a few clusters, hence a margin rather than ~0
    assert error_after_first_batch(kmeans_init=True) < 0.4 * error_after_first_batch(kmeans_init=False)


def test_eval_mode_never_changes_the_codebook() -> None:
    torch.manual_seed(0)
    vq = VectorQuantizer(8, CodebookOptions(codebook_size=16, dead_code_steps=1))
    z = latents()
    vq.train()(z)
    state = {name: tensor.clone() for name, tensor in vq.state_dict().items()}
    vq.eval()
    vq(latents(seed=1))
    vq.encode(latents(seed=2))
    for name, tensor in vq.state_dict().items():
        assert torch.equal(tensor, state[name]), name


# --------------------------------------------------------------------------------------------------
# ResidualVQ
# --------------------------------------------------------------------------------------------------
def test_each_residual_stage_lowers_the_error() -> None:
    torch.manual_seed(0)
    rvq = ResidualVQ(8, 4, CodebookOptions(codebook_size=16), quantizer_dropout=0.5)
    z = latents(batch=16, frames=32)
    rvq.train()
    for _ in range(10):
        rvq(z)
    rvq.eval()
    errors = [float((rvq.decode(rvq.encode(z, n_q=n_q)) - z).pow(2).mean()) for n_q in range(1, 5)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 0.5 * errors[0]


@pytest.mark.parametrize("codebook_dim", [None, 4], ids=["plain", "factorised"])
def test_every_stage_commitment_loss_reaches_the_encoder(codebook_dim: int | None) -> None:
    """The EnCodec bug (encodec#25): residual - straight-through output leaves stages > 0 without gradient."""
    torch.manual_seed(0)
    rvq = ResidualVQ(
        8, 4, CodebookOptions(codebook_size=16, codebook_dim=codebook_dim), quantizer_dropout=0.0
    ).train()
    z = latents().requires_grad_()
    out = rvq(z)
    for stage in range(4):
        (grad,) = torch.autograd.grad(out.commitment_loss[stage], z, retain_graph=True)
        assert grad.abs().sum() > 0, f"stage {stage}'s commitment loss does not reach z"


def test_quantizer_dropout_gives_valid_decodes_for_every_n_q() -> None:
    torch.manual_seed(0)
    rvq = ResidualVQ(8, 4, CodebookOptions(codebook_size=16), quantizer_dropout=0.5)
    z = latents(batch=8)
    rvq.train()
    for _ in range(3):
        rvq(z)
    rvq.eval()
    for n_q in range(1, 5):
        codes = rvq.encode(z, n_q=n_q)
        assert codes.shape == (8, n_q, 16)
        decoded = rvq.decode(codes)
        assert decoded.shape == z.shape
        assert torch.isfinite(decoded).all()
        out = rvq(z, n_q=n_q)
        assert torch.equal(out.codes, codes)
        assert out.commitment_loss.shape == (n_q,)


def test_quantizer_dropout_makes_some_examples_use_fewer_stages() -> None:
    torch.manual_seed(0)
    num_codebooks = 4
    rvq = ResidualVQ(8, num_codebooks, fixed_codebook_options(16), quantizer_dropout=0.5).train()
    z = latents(batch=32)
    out = rvq(z)
    assert out.codes.shape == (32, num_codebooks, 16)
    # the stages an example used: the k whose decode reproduces its quantized output
    partial = [rvq.decode(out.codes[:, :k]) for k in range(1, num_codebooks + 1)]
    stages_used = []
    for example in range(32):
        matches = [
            k + 1 for k in range(num_codebooks) if torch.equal(partial[k][example], out.quantized[example])
        ]
        assert len(matches) == 1
        stages_used.append(matches[0])
    assert min(stages_used) >= 1
    assert num_codebooks in stages_used  # some examples keep every stage
    assert any(k < num_codebooks for k in stages_used)  # and some use fewer


def test_losses_of_dropped_stages_are_excluded() -> None:
    torch.manual_seed(0)
    # dropout 1: every example draws n_q from [1, 2), so stage 1 serves no example
    rvq = ResidualVQ(8, 2, fixed_codebook_options(16), quantizer_dropout=1.0).train()
    z = latents().requires_grad_()
    out = rvq(z)
    assert float(out.commitment_loss.detach()[1]) == 0.0 and float(out.codebook_loss.detach()[1]) == 0.0
    assert out.commitment_loss[0] > 0
    assert torch.equal(out.quantized, rvq.decode(out.codes[:, :1]))
    out.loss.backward()
    first, second = (stage.codebook.grad for stage in rvq.stages if isinstance(stage, VectorQuantizer))
    assert first is not None and first.abs().sum() > 0
    assert second is None or second.abs().sum() == 0


# --------------------------------------------------------------------------------------------------
# GroupVQ
# --------------------------------------------------------------------------------------------------
def test_group_vq_shapes_and_round_trip() -> None:
    torch.manual_seed(0)
    gvq = GroupVQ(8, 4, CodebookOptions(codebook_size=16))
    z = latents(batch=3, frames=10)
    out = gvq.train()(z)
    assert out.quantized.shape == z.shape
    assert out.codes.shape == (3, 4, 10) and out.codes.dtype == torch.int64
    assert out.commitment_loss.shape == (4,) and out.codebook_loss.shape == (4,)
    assert gvq.codebooks().shape == (4, 16, 2)
    gvq.eval()
    codes = gvq.encode(z)
    assert codes.shape == (3, 4, 10) and int(codes.max()) < 16
    assert torch.equal(gvq.decode(codes), gvq(z).quantized)
    # each group quantizes only its own channels
    changed = z.clone()
    changed[:, 2:4] += 10.0
    changed_codes = gvq.encode(changed)
    assert torch.equal(changed_codes[:, [0, 2, 3]], codes[:, [0, 2, 3]])


def test_group_vq_rejects_n_q() -> None:
    gvq = GroupVQ(8, 4, CodebookOptions(codebook_size=16)).eval()
    z = latents()
    assert gvq.encode(z, n_q=4).shape == (4, 4, 16)
    with pytest.raises(ValueError, match="group VQ needs all num_codebooks=4"):
        gvq.encode(z, n_q=2)
    with pytest.raises(ValueError, match="n_q"):
        gvq(z, n_q=1)


# --------------------------------------------------------------------------------------------------
# All families
# --------------------------------------------------------------------------------------------------
def trained(quantizer: Quantizer, steps: int = 3) -> Quantizer:
    quantizer.train()
    for step in range(steps):
        quantizer(latents(batch=8, seed=10 + step))
    return quantizer.eval()


FAMILIES = {
    "vq": lambda: VectorQuantizer(8, CodebookOptions(codebook_size=16)),
    "rvq": lambda: ResidualVQ(8, 3, CodebookOptions(codebook_size=16)),
    "rvq_factorised": lambda: ResidualVQ(8, 3, CodebookOptions(codebook_size=16, codebook_dim=4)),
    "rvq_gradient_codebook": lambda: ResidualVQ(8, 3, CodebookOptions(codebook_size=16, ema=False)),
    "group": lambda: GroupVQ(8, 2, CodebookOptions(codebook_size=16)),
    "group_factorised": lambda: GroupVQ(8, 2, CodebookOptions(codebook_size=16, codebook_dim=2)),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_eval_decode_of_encode_equals_forward_exactly(family: str) -> None:
    torch.manual_seed(0)
    quantizer = trained(FAMILIES[family]())
    z = latents(seed=99)
    codes = quantizer.encode(z)
    assert codes.shape == (4, quantizer.num_codebooks, 16)
    out = quantizer(z)
    assert torch.equal(out.codes, codes)
    assert torch.equal(quantizer.decode(codes), out.quantized)
    assert torch.equal(quantizer.decode(codes.to(torch.int16)), out.quantized)  # token files hold int16
    assert quantizer.codebooks().shape[:2] == (quantizer.num_codebooks, 16)


@pytest.mark.parametrize("family", FAMILIES)
def test_state_dict_strict_round_trip(family: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = trained(FAMILIES[family]())
    save_file(original.state_dict(), str(tmp_path / "quantizer.safetensors"))
    torch.manual_seed(1)  # a different random codebook, overwritten by the load
    loaded = FAMILIES[family]()
    loaded.load_state_dict(load_file(str(tmp_path / "quantizer.safetensors")), strict=True)
    loaded.eval()
    z = latents(seed=7)
    assert torch.equal(loaded.encode(z), original.encode(z))
    assert torch.equal(loaded(z).quantized, original(z).quantized)
    # training resumes identically: EMA, usage and k-means state all came along
    for quantizer in (original, loaded):
        torch.manual_seed(5)
        quantizer.train()(latents(seed=8))
    for name, tensor in original.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_inputs_are_validated() -> None:
    rvq = ResidualVQ(8, 3, CodebookOptions(codebook_size=16)).eval()
    with pytest.raises(ValueError, match=r"D=8, got shape \(4, 16, 8\)"):
        rvq(latents().transpose(1, 2))
    with pytest.raises(ValueError, match="expects latents"):
        rvq.encode(torch.randn(8, 16))
    with pytest.raises(TypeError, match="floating-point"):
        rvq.encode(torch.zeros(1, 8, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="n_q must be an integer between 1 and num_codebooks=3"):
        rvq.encode(latents(), n_q=4)
    with pytest.raises(ValueError, match="n_q"):
        rvq(latents(), n_q=0)
    with pytest.raises(TypeError, match="integer codes"):
        rvq.decode(torch.zeros(1, 3, 4))
    with pytest.raises(ValueError, match=r"codes in \[16, 16\] but codebook_size is 16 \(indices 0..15\)"):
        rvq.decode(torch.full((1, 3, 4), 16))
    with pytest.raises(ValueError, match=r"1 <= K <= 3"):
        rvq.decode(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"codes\[None\]"):
        rvq.decode(torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="K = 1"):
        VectorQuantizer(8, CodebookOptions(codebook_size=16)).decode(torch.zeros(1, 2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        GroupVQ(10, 4, CodebookOptions(codebook_size=16))
    with pytest.raises(ValueError, match="codebook_dim"):
        VectorQuantizer(8, CodebookOptions(codebook_size=16, codebook_dim=9))
    with pytest.raises(ValueError, match="quantizer_dropout"):
        ResidualVQ(8, 2, CodebookOptions(codebook_size=16), quantizer_dropout=1.5)


def test_build_quantizer_follows_the_config() -> None:
    config = QuantizerConfig(
        num_codebooks=3, codebook_size=32, codebook_dim=4, ema=False, quantizer_dropout=0.25
    )
    rvq = build_quantizer(16, config)
    assert isinstance(rvq, ResidualVQ)
    assert (rvq.dim, rvq.num_codebooks, rvq.codebook_size, rvq.quantizer_dropout) == (16, 3, 32, 0.25)
    assert rvq.codebooks().shape == (3, 32, 4)
    assert isinstance(rvq.stages[0].codebook, torch.nn.Parameter)
    assert all(stage.options == CodebookOptions.from_config(config) for stage in rvq.stages)
    # the usage-entropy penalty is the first stage's alone
    penalised = build_quantizer(16, dataclasses.replace(config, usage_entropy_weight=0.1))
    assert [stage.options.usage_entropy_weight for stage in penalised.stages] == [0.1, 0.0, 0.0]
    gvq = build_quantizer(16, dataclasses.replace(config, kind="group", num_codebooks=4, codebook_dim=None))
    assert isinstance(gvq, GroupVQ)
    assert gvq.codebooks().shape == (4, 32, 4)


def test_codebook_options_defaults_and_from_config_follow_quantizer_config() -> None:
    assert CodebookOptions.from_config(QuantizerConfig()) == CodebookOptions()
    # every per-codebook field is carried over, not just the ones whose default differs
    changed = {
        "codebook_size": 32,
        "codebook_dim": 4,
        "commitment_weight": 0.5,
        "codebook_weight": 2.0,
        "ema": True,  # the default; ema=False is checked below
        "ema_decay": 0.9,
        "laplace_epsilon": 1e-3,
        "kmeans_init": False,
        "kmeans_iters": 3,
        "dead_code_steps": 7,
        "usage_entropy_weight": 0.1,
        "codebook": "fsq",
        "fsq_levels": (4, 8),  # 32 codes
        "gumbel_temperature_start": 0.7,
        "gumbel_temperature_end": 0.2,
        "gumbel_anneal_steps": 30,
        "gumbel_anneal": "cosine",
    }
    assert set(changed) == {option.name for option in dataclasses.fields(CodebookOptions)}
    options = CodebookOptions.from_config(QuantizerConfig(**changed))
    assert dataclasses.asdict(options) == changed
    assert CodebookOptions.from_config(QuantizerConfig(ema=False)).ema is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"codebook_size": 1}, "codebook_size must be at least 2, got 1"),
        ({"codebook_dim": 0}, "codebook_dim must be None or at least 1, got 0"),
        ({"commitment_weight": -0.1}, "loss weights must be >= 0"),
        ({"codebook_weight": -1.0}, "loss weights must be >= 0"),
        ({"ema_decay": 1.0}, r"ema_decay must be in \[0, 1\) with ema=True, got 1.0"),
        ({"laplace_epsilon": 0.0}, "laplace_epsilon must be > 0 with ema=True"),
        ({"kmeans_iters": 0}, "kmeans_iters must be at least 1 with kmeans_init=True"),
        ({"dead_code_steps": -1}, "dead_code_steps must be >= 0, got -1"),
    ],
)
def test_codebook_options_reject_invalid_values(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CodebookOptions(**overrides)


def test_codebook_options_checks_are_conditional_and_types_are_checked() -> None:
    # settings of a switched-off feature are not checked
    CodebookOptions(ema=False, ema_decay=1.0, laplace_epsilon=0.0)
    CodebookOptions(kmeans_init=False, kmeans_iters=0)
    with pytest.raises(TypeError, match=r"codebook_size must be an integer, got 16.0"):
        CodebookOptions(codebook_size=16.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dead_code_steps must be an integer, got True"):
        CodebookOptions(dead_code_steps=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        CodebookOptions().codebook_size = 8  # type: ignore[misc]
    # the old keyword signatures: a codebook size where the options go is caught at the boundary
    for build, caller in [
        (lambda: VectorQuantizer(8, 16), "VectorQuantizer"),
        (lambda: ResidualVQ(8, 2, 16), "ResidualVQ"),
        (lambda: GroupVQ(8, 2, 16), "GroupVQ"),
    ]:
        with pytest.raises(
            TypeError, match=f"{caller} expects the codebook settings as a CodebookOptions, got int"
        ):
            build()


def test_checkpoint_key_names_are_stable() -> None:
    """Trained checkpoints load with strict=True: these names are a file format."""
    ema_stage = ["codebook", "ema_cluster_size", "ema_sum", "initialized", "steps_unused"]
    projections = ["project_in.bias", "project_in.weight", "project_out.bias", "project_out.weight"]
    rvq = build_quantizer(8, QuantizerConfig(num_codebooks=2, codebook_size=4, codebook_dim=2))
    expected = [f"stages.{stage}.{name}" for stage in range(2) for name in ema_stage + projections]
    assert sorted(rvq.state_dict()) == sorted(expected)
    gvq = build_quantizer(8, QuantizerConfig(kind="group", num_codebooks=2, codebook_size=4, ema=False))
    gradient_stage = ["codebook", "initialized", "steps_unused"]  # the codebook is a parameter, no EMA state
    expected = [f"groups.{group}.{name}" for group in range(2) for name in gradient_stage]
    assert sorted(gvq.state_dict()) == sorted(expected)


# --------------------------------------------------------------------------------------------------
# DDP: replicas keep identical codebooks
# --------------------------------------------------------------------------------------------------
def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        # Everything on: k-means init, EMA, restarts, quantizer dropout; each rank sees other data.
        torch.manual_seed(0)  # identical initial modules, as DDP's initial broadcast would make them
        rvq = ResidualVQ(
            8, 3, CodebookOptions(codebook_size=16, codebook_dim=4, dead_code_steps=2), quantizer_dropout=0.5
        )
        torch.manual_seed(100 + rank)
        for step in range(4):
            rvq(latents(batch=2 + rank, seed=10 * rank + step) + rank)
        save_file(rvq.state_dict(), f"{out_dir}/all_rank{rank}.safetensors")
        # EMA only: one step on rank-local data equals one step on the concatenated batch
        torch.manual_seed(0)
        vq = VectorQuantizer(
            8, CodebookOptions(codebook_size=16, kmeans_init=False, dead_code_steps=0, ema_decay=0.5)
        )
        vq(latents(batch=2, seed=rank))
        save_file(vq.state_dict(), f"{out_dir}/ema_rank{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def test_ddp_replicas_keep_identical_codebooks(tmp_path: Path) -> None:
    world_size = 2
    mp.spawn(_ddp_worker, args=(world_size, str(tmp_path / "init"), str(tmp_path)), nprocs=world_size)
    states = [load_file(str(tmp_path / f"all_rank{rank}.safetensors")) for rank in range(world_size)]
    assert bool(states[0]["stages.2.initialized"])
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name

    torch.manual_seed(0)
    single = VectorQuantizer(
        8, CodebookOptions(codebook_size=16, kmeans_init=False, dead_code_steps=0, ema_decay=0.5)
    )
    single(torch.cat([latents(batch=2, seed=rank) for rank in range(world_size)]))
    for rank in range(world_size):
        ddp_state = load_file(str(tmp_path / f"ema_rank{rank}.safetensors"))
        for name, tensor in single.state_dict().items():
            torch.testing.assert_close(ddp_state[name], tensor, msg=name)
