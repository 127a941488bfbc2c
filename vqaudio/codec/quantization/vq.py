"""One codebook: the VQ-VAE bottleneck and the training aids later codecs found necessary.

van den Oord et al. 2017, "Neural Discrete Representation Learning": nearest code, straight-through
estimator, codebook loss ||sg(z) - q||^2 and commitment loss beta * ||z - sg(q)||^2, and (appendix) EMA
codebook updates. On top of that, each optional:

- Laplace smoothing of the EMA cluster sizes (Razavi et al. 2019, "Generating Diverse High-Fidelity
  Images with VQ-VAE-2"), so a rarely used code never divides by zero;
- k-means initialisation on the first training batch (Zeghidour et al. 2021, "SoundStream");
- restarting dead codes from current encoder outputs (Dhariwal et al. 2020, "Jukebox");
- factorised codes: look codes up in a small L2-normalised space and project back up (Yu et al. 2022,
  "Vector-quantized Image Modeling with Improved VQGAN"; Kumar et al. 2023, "High-Fidelity Audio
  Compression with Improved RVQGAN" (DAC));
- a usage-entropy penalty on soft assignments, which pushes the encoder to spread its frames over the codes
  (the codebook-entropy term of Yu et al. 2023, "Language Model Beats Diffusion: Tokenizer is Key to Visual
  Generation" (MAGVIT-v2), on nearest-code distances; the diversity loss of wav2vec 2.0 is the same idea).

Under ``torch.distributed`` every statistic that changes the codebook (EMA counts and sums, k-means
sums, code usage) is all-reduced and every random choice (k-means seeds, restart samples) is broadcast
from rank 0, so DDP replicas keep identical codebooks without relying on DDP's buffer broadcast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqaudio.codec.quantization.base import (
    Codebook,
    CodebookOptions,
    CodebookOutput,
    all_reduce_sum,
    broadcast_from_first,
    check_integer,
    check_options,
    masked_mean,
)
from vqaudio.codec.quantization.base import check_codes as check_codes  # re-exported (earlier import path)
from vqaudio.codec.quantization.base import check_latents as check_latents  # re-exported
from vqaudio.errors import InputError

# At most this many distance entries ([rows, codebook_size]) exist at once, so encoding a long file in one
# call does not allocate a huge matrix; training batches fit in one block.
_MAX_DISTANCE_ELEMENTS = 1 << 24


# --------------------------------------------------------------------------------------------------
# Nearest code, k-means and the DDP helpers
# --------------------------------------------------------------------------------------------------
def nearest_codes(x: Tensor, codebook: Tensor) -> Tensor:
    """Index of the nearest code for each row of ``x`` by squared Euclidean distance.

    ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2. The ||x||^2 term is the same for every code, so the argmin
    needs one addmm per block of rows: no [N, C, D] difference tensor and no loop over codes.

    Args:
        x: [N, D] vectors.
        codebook: [C, D] code vectors.
    Returns:
        [N] int64 indices into ``codebook`` (the lowest index on ties).
    """
    code_norms = codebook.pow(2).sum(dim=1)  # [C]
    rows_per_block = max(1, _MAX_DISTANCE_ELEMENTS // codebook.shape[0])
    if x.shape[0] <= rows_per_block:
        return torch.addmm(code_norms, x, codebook.t(), alpha=-2.0).argmin(dim=1)
    return torch.cat(
        [
            torch.addmm(code_norms, rows, codebook.t(), alpha=-2.0).argmin(dim=1)
            for rows in x.split(rows_per_block)
        ]
    )


def _cluster_statistics(
    x: Tensor, codes: Tensor, num_codes: int, weights: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Per-code (weighted) counts [C] and sums of assigned vectors [C, D], summed over DDP processes.

    Counts and sums travel in one tensor, so DDP costs one all-reduce per call.
    """
    weights = x.new_ones(x.shape[0]) if weights is None else weights
    stats = x.new_zeros(num_codes, 1 + x.shape[1])  # [C, 1 + D]: count, then sum
    stats.index_add_(0, codes, torch.cat([weights[:, None], x * weights[:, None]], dim=1))
    all_reduce_sum(stats)
    return stats[:, 0], stats[:, 1:]


def _code_counts(codes: Tensor, num_codes: int, weights: Tensor) -> Tensor:
    """Per-code (weighted) counts [C], summed over DDP processes."""
    counts = weights.new_zeros(num_codes).index_add_(0, codes, weights)
    return all_reduce_sum(counts)


def _kmeans(x: Tensor, num_clusters: int, num_iters: int, spherical: bool) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means over the rows of every DDP process.

    Args:
        x: [N, D] this process's vectors.
        num_clusters: C.
        num_iters: Lloyd iterations (at least 1).
        spherical: keep centroids on the unit sphere (for L2-normalised codes).
    Returns:
        centroids [C, D] and the cluster sizes [C] of the last assignment, identical on every process.
    """
    num_rows = x.shape[0]
    if num_rows >= num_clusters:
        seeds = torch.randperm(num_rows, device=x.device)[:num_clusters]
    else:  # a small first batch: some clusters start as duplicates and stay empty until restarted
        seeds = torch.randint(num_rows, (num_clusters,), device=x.device)
    centroids = broadcast_from_first(x[seeds].contiguous())
    counts = x.new_zeros(num_clusters)
    for _ in range(num_iters):
        counts, sums = _cluster_statistics(x, nearest_codes(x, centroids), num_clusters)
        means = sums / counts.clamp_min(1.0)[:, None]
        if spherical:
            means = F.normalize(means, dim=1)
        centroids = torch.where(counts[:, None] > 0, means, centroids)  # an empty cluster keeps its seed
    return centroids, counts


def usage_entropy_penalty(x: Tensor, codebook: Tensor, weights: Tensor | None = None) -> Tensor:
    """How far the batch's soft code usage is from uniform: log C minus its entropy, in nats (0: uniform).

    Lowering it moves frames towards codes the batch uses little, so a codebook that k-means and restarts
    leave skewed (speech: many frames near a few codes) spreads over its codes and its perplexity rises. A
    frame's soft assignment is a softmax of minus its squared distances to the codes, at a temperature of
    the batch's mean gap between the nearest and the second-nearest code: the soft usage then follows the
    hard one (on the embedded tokenizer's first codebook, 500 against 411), and the temperature is in the
    units of the codebook's own distances. The gradient reaches ``x`` only, and grows as the distances shrink,
    which is why ResidualVQ gives it to its first stage alone.

    Args:
        x: [N, Dc] vectors in code space.
        codebook: [C, Dc] code vectors.
        weights: [N] 1 for the frames that count (quantizer dropout), None: all.
    Returns:
        scalar in [0, log C].
    """
    distances = (x.pow(2).sum(dim=1, keepdim=True) + codebook.pow(2).sum(dim=1)).addmm(
        x, codebook.t(), alpha=-2.0
    )  # [N, C]
    two_nearest = distances.detach().topk(2, dim=1, largest=False).values
    gap = masked_mean(two_nearest[:, 1] - two_nearest[:, 0], weights)
    # No gap when every frame sits on a code that has a twin: k-means seeded from a first batch with fewer
    # frames than codes (rvq_mel_pitch at 2 crops per process). A temperature of 0 would make the gradient
    # inf, so the penalty is 0 for that step; the next batch's frames are off the codes.
    spread = gap >= torch.finfo(x.dtype).tiny
    probs = torch.softmax(-distances / torch.where(spread, gap, torch.ones_like(gap)), dim=1)
    usage = masked_mean(probs, weights)  # [C]
    entropy = -(usage * usage.clamp_min(torch.finfo(x.dtype).tiny).log()).sum()
    return torch.where(spread, math.log(codebook.shape[0]) - entropy, torch.zeros_like(entropy))


# --------------------------------------------------------------------------------------------------
# The quantizer
# --------------------------------------------------------------------------------------------------
class VectorQuantizer(Codebook):
    """One nearest-code codebook: latents [B, D, F] -> one code per frame, codes [B, 1, F].

    Training-mode ``forward`` also maintains the codebook: k-means initialisation on the first batch,
    EMA updates, dead-code restarts. Eval mode changes nothing, and ``decode(encode(z))`` then equals
    ``forward(z).quantized`` exactly.

    Args:
        dim: D, channels of the latents.
        options: the codebook's size and training settings (see ``CodebookOptions``). A
            ``codebook_dim`` below ``dim`` gives factorised codes: projected down by a linear map,
            L2-normalised (input and codebook) for the lookup, projected back up.
    """

    codebook: Tensor
    ema_cluster_size: Tensor
    ema_sum: Tensor
    initialized: Tensor
    steps_unused: Tensor

    # Buffers that only training reads: the EMA statistics the codebook is re-estimated from (as large as
    # the codebook itself) and the dead-code counters. Released models leave them out; see
    # ``reset_training_state``.
    TRAINING_STATE = ("ema_sum", "ema_cluster_size", "steps_unused")

    def __init__(self, dim: int, options: CodebookOptions = CodebookOptions()) -> None:
        super().__init__()
        options = check_options(options, "VectorQuantizer")
        check_integer(dim, "dim", "VectorQuantizer")
        if dim < 1:
            raise InputError(f"VectorQuantizer: dim must be at least 1, got {dim}")
        codebook_dim = dim if options.codebook_dim is None else options.codebook_dim
        if codebook_dim > dim:
            raise InputError(
                f"VectorQuantizer: codebook_dim must be at most dim={dim}, got {codebook_dim}; "
                "use None for codes of the latent size, or a smaller value for factorised codes"
            )

        self.dim = dim
        self.codebook_size = options.codebook_size
        self.codebook_dim = codebook_dim  # resolved: never None
        self.options = options

        # Factorised codes (ViT-VQGAN, DAC): in a small space on the unit sphere the lookup compares
        # directions only, which spreads usage over the codebook; the projections are learned.
        self.factorised = codebook_dim < dim
        self.project_in = nn.Linear(dim, codebook_dim) if self.factorised else None
        self.project_out = nn.Linear(codebook_dim, dim) if self.factorised else None

        initial = torch.randn(self.codebook_size, codebook_dim)
        if options.ema:
            # The codebook is ema_sum / (smoothed) ema_cluster_size, kept as a buffer: no gradient reaches it.
            # Sizes start at 1 so that codebook == ema_sum / size holds before the first update.
            self.register_buffer("codebook", initial)
            self.register_buffer("ema_cluster_size", torch.ones(self.codebook_size))
            self.register_buffer("ema_sum", initial.clone())
        else:
            self.codebook = nn.Parameter(initial)
        self.register_buffer("initialized", torch.tensor(not options.kmeans_init))
        self.register_buffer("steps_unused", torch.zeros(self.codebook_size, dtype=torch.long))

    @torch.no_grad()
    def reset_training_state(self) -> None:
        """Restart the training statistics from the current codebook (after loading a released model).

        Sizes of 1 and sums equal to the codes keep ``codebook == ema_sum / size``, as at construction.
        """
        if self.options.ema:
            self.ema_cluster_size.fill_(1.0)
            self.ema_sum.copy_(self.codebook)
        self.steps_unused.zero_()

    # ---------------------------------------------------------------------------------------------- public
    @torch.no_grad()
    def codebooks(self) -> Tensor:
        """[1, C, codebook_dim] the code vectors as looked up (unit-norm rows for factorised codes)."""
        return self._code_vectors()[None].clone()

    @torch.no_grad()
    def latent_codebooks(self) -> Tensor:
        """[1, C, D] the code vectors in latent space (projected out for factorised codes), as ``embed`` gives."""
        codes = torch.arange(self.codebook_size, device=self.codebook.device)[None]  # [1, C]
        return self.embed(codes).transpose(1, 2).clone()  # [1, D, C] -> [1, C, D]

    # ------------------------------------------------------------------ building blocks of the families
    def quantize(
        self, z: Tensor, active: Tensor | None = None, loss_input: Tensor | None = None
    ) -> CodebookOutput:
        """Quantize [B, D, F] latents (not validated: the public ``forward`` of each family does that).

        Args:
            z: [B, D, F] latents; the output's straight-through gradient flows to them.
            active: [B] bool, the examples this codebook serves (ResidualVQ's quantizer dropout). The others
                are still quantized (valid codes) but left out of the losses, the EMA and the usage counts.
                None: all.
            loss_input: [B, D, F] the same values as ``z`` reached through another graph; the commitment
                loss is computed from it. ResidualVQ uses this so that every stage's loss reaches the
                encoder while the output keeps a single straight-through gradient. None: ``z``.
        Returns:
            CodebookOutput.
        """
        batch_size, _, num_frames = z.shape
        # Distances and statistics in the codebook's precision: under bf16 autocast near-ties flip codes.
        with torch.autocast(device_type=z.device.type, enabled=False):
            x = self._project(z)  # [N, Dc], N = B * F, example-major
            x_loss = x if loss_input is None or loss_input is z else self._project(loss_input)
            weights = None
            if active is not None:
                weights = active[:, None].expand(batch_size, num_frames).reshape(-1).to(x.dtype)  # [N]
            if self.training:
                self._prepare_codebook(x.detach())

            codebook = self._code_vectors()  # [C, Dc]
            codes = nearest_codes(x.detach(), codebook.detach())  # [N]
            q = F.embedding(codes, codebook)  # [N, Dc]; carries the codebook loss gradient without EMA

            commitment_loss = masked_mean((x_loss - q.detach()).pow(2).mean(dim=1), weights)
            loss = self.options.commitment_weight * commitment_loss
            if self.options.ema:
                codebook_loss = commitment_loss.detach()  # same value; reported only, the EMA moves the codes
            else:
                codebook_loss = masked_mean((x.detach() - q).pow(2).mean(dim=1), weights)
                loss = loss + self.options.codebook_weight * codebook_loss
            if self.training and self.options.usage_entropy_weight > 0:
                # a copy: the EMA update below rewrites the codebook before the backward pass
                loss = loss + self.options.usage_entropy_weight * usage_entropy_penalty(
                    x_loss, codebook.detach().clone(), weights
                )

            # Straight-through estimator, written so that the value is exactly q (forward and decode agree
            # bit for bit) while the gradient w.r.t. x is the identity: x - sg(x) is 0 with derivative 1.
            straight_through = q.detach() + (x - x.detach())
            quantized = self._unproject(straight_through, batch_size)

            if self.training:
                self._update_statistics(x.detach(), codes, weights)
        return CodebookOutput(
            quantized=quantized,
            codes=codes.reshape(batch_size, num_frames),
            loss=loss,
            commitment_loss=commitment_loss,
            codebook_loss=codebook_loss,
        )

    @torch.no_grad()
    def lookup(self, z: Tensor) -> Tensor:
        """[B, D, F] latents -> [B, F] int64 nearest codes (not validated; never changes the codebook)."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            codes = nearest_codes(self._project(z), self._code_vectors())
        return codes.reshape(z.shape[0], z.shape[2])

    def embed(self, codes: Tensor) -> Tensor:
        """[B, F] int64 codes -> [B, D, F] code vectors in latent space (not validated)."""
        with torch.autocast(device_type=codes.device.type, enabled=False):
            vectors = F.embedding(codes.reshape(-1), self._code_vectors())  # [B * F, Dc]
            return self._unproject(vectors, codes.shape[0])

    # ----------------------------------------------------------------------------------------- private
    def _code_vectors(self) -> Tensor:
        """[C, Dc] the codes as compared and decoded: unit-norm rows for factorised codes."""
        return F.normalize(self.codebook, dim=1) if self.factorised else self.codebook

    def _project(self, z: Tensor) -> Tensor:
        """[B, D, F] latents -> [B * F, Dc] vectors in code space."""
        x = z.transpose(1, 2).reshape(-1, self.dim).to(self.codebook.dtype)  # [B * F, D]
        if self.project_in is not None:
            x = F.normalize(self.project_in(x), dim=1)
        return x

    def _unproject(self, vectors: Tensor, batch_size: int) -> Tensor:
        """[B * F, Dc] code-space vectors -> [B, D, F] latents."""
        if self.project_out is not None:
            vectors = self.project_out(vectors)
        return vectors.reshape(batch_size, -1, self.dim).transpose(1, 2)

    @torch.no_grad()
    def _prepare_codebook(self, x: Tensor) -> None:
        """Before the lookup of a training step: k-means initialisation, then dead-code restarts.

        Both sample all rows of ``x``, including examples that quantizer dropout excludes from the
        losses: their residuals come from the same distribution, and more samples make better seeds.
        """
        if self.options.kmeans_init and not self._is_initialized():
            self._initialize_with_kmeans(x)
        if self.options.dead_code_steps > 0:
            self._restart_dead_codes(x)

    def _initialize_with_kmeans(self, x: Tensor) -> None:
        centroids, counts = _kmeans(
            x, self.codebook_size, self.options.kmeans_iters, spherical=self.factorised
        )
        self.codebook.copy_(centroids)
        if self.options.ema:
            # Start the averages as if the codebook had already seen this batch (sizes >= 1 keep empty
            # clusters finite), so the first EMA steps refine the k-means codes instead of resetting them.
            sizes = counts.clamp_min(1.0)
            self.ema_cluster_size.copy_(sizes)
            self.ema_sum.copy_(centroids * sizes[:, None])
        self.steps_unused.zero_()
        self.initialized.fill_(True)
        self._initialized_seen = True

    def _restart_dead_codes(self, x: Tensor) -> None:
        """Re-seed dead codes with random vectors of this batch.

        A code is dead when unused for ``dead_code_steps`` steps. An unused code gets no EMA or gradient
        update, so without a restart it stays unused for good and the codebook's effective size shrinks
        (Jukebox). Seeding it on a current input makes it the nearest code of at least that input.
        """
        dead = self.steps_unused >= self.options.dead_code_steps  # [C], identical on every DDP process
        # One host sync per step: writing unconditionally would bump the version of a trainable codebook
        # that autograd may have saved for a backward pass still to come.
        if not bool(dead.any()):
            return
        dead_indices = dead.nonzero().squeeze(1)
        picks = torch.randint(x.shape[0], (dead_indices.shape[0],), device=x.device)
        samples = broadcast_from_first(x[picks].contiguous())  # [num_dead, Dc]
        self.codebook[dead_indices] = samples
        if self.options.ema:  # as if the code had seen that one sample
            self.ema_sum[dead_indices] = samples
            self.ema_cluster_size[dead_indices] = 1.0
        self.steps_unused[dead_indices] = 0

    @torch.no_grad()
    def _update_statistics(self, x: Tensor, codes: Tensor, weights: Tensor | None) -> None:
        """After the lookup of a training step: EMA codebook update and code-usage counters."""
        counts: Tensor | None = None
        if self.options.ema:
            counts, sums = _cluster_statistics(x, codes, self.codebook_size, weights)
            self.ema_cluster_size.lerp_(counts, 1.0 - self.options.ema_decay)
            self.ema_sum.lerp_(sums, 1.0 - self.options.ema_decay)
            # Laplace smoothing: (size + eps) / (total + C * eps) * total keeps the total and makes every
            # size positive, so a code that has not been used for a while stays finite.
            total = self.ema_cluster_size.sum()
            eps = self.options.laplace_epsilon
            smoothed = (self.ema_cluster_size + eps) / (total + self.codebook_size * eps) * total
            self.codebook.copy_(self.ema_sum / smoothed[:, None])
        elif self.options.dead_code_steps > 0:
            counts = _code_counts(
                codes, self.codebook_size, x.new_ones(x.shape[0]) if weights is None else weights
            )
        if counts is not None and self.options.dead_code_steps > 0:
            self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
