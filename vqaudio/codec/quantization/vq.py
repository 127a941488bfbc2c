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
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vqaudio.codec.quantization.base import Quantizer, QuantizerOutput
from vqaudio.config import QuantizerConfig
from vqaudio.errors import InputError

# At most this many distance entries ([rows, codebook_size]) exist at once, so encoding a long file in one
# call does not allocate a huge matrix; training batches fit in one block.
_MAX_DISTANCE_ELEMENTS = 1 << 24


class CodebookOutput(NamedTuple):
    """What ``VectorQuantizer.quantize`` returns: one codebook applied to latents [B, D, F].

    quantized: [B, D, F] the code vectors (exactly), with a straight-through gradient to the input.
    codes: [B, F] int64 code indices.
    loss: scalar, commitment_weight * commitment_loss (+ codebook_weight * codebook_loss without EMA).
    commitment_loss: scalar, unweighted ||x - sg(q)||^2 in code space (keeps its graph).
    codebook_loss: scalar, unweighted ||sg(x) - q||^2 in code space (detached with EMA).
    """

    quantized: Tensor
    codes: Tensor
    loss: Tensor
    commitment_loss: Tensor
    codebook_loss: Tensor


# --------------------------------------------------------------------------------------------------
# The settings of one codebook (shared by the quantizer families)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CodebookOptions:
    """Everything about one codebook except the size of its input; RVQ stages and groups share one.

    The defaults equal ``QuantizerConfig``'s (the single home of defaults; a test keeps them equal).
    Settings that depend on the input size (``codebook_dim <= dim``) are checked by ``VectorQuantizer``.
    """

    codebook_size: int = 1024  # C, number of codes
    codebook_dim: int | None = None  # code space; None: the input size; smaller: factorised, L2-normalised
    commitment_weight: float = 0.25  # beta in beta * ||x - sg(q)||^2: keeps the encoder close to its codes
    codebook_weight: float = 1.0  # weight of ||sg(x) - q||^2, moving codes by gradient (unused with ema)
    ema: bool = True  # move codes (a buffer) by EMA of their assigned inputs instead of the codebook loss
    ema_decay: float = 0.99  # EMA decay per training step, in [0, 1)
    laplace_epsilon: float = 1e-5  # additive smoothing of the EMA cluster sizes, so no code divides by 0
    kmeans_init: bool = True  # initialise the codebook with k-means on the first training batch
    kmeans_iters: int = 10  # Lloyd iterations of that k-means
    dead_code_steps: int = 200  # re-seed a code unused for this many training steps from the batch (0: never)
    usage_entropy_weight: float = 0.0  # weight of the usage-entropy penalty in nats (0: off); see quantize()

    def __post_init__(self) -> None:
        where = "CodebookOptions"
        for name in ("codebook_size", "kmeans_iters", "dead_code_steps"):
            _check_integer(getattr(self, name), name, where)
        if self.codebook_dim is not None:
            _check_integer(self.codebook_dim, "codebook_dim", where)
        if self.codebook_size < 2:
            raise InputError(
                f"{where}: codebook_size must be at least 2, got {self.codebook_size}; "
                "one code carries no information"
            )
        if self.codebook_dim is not None and self.codebook_dim < 1:
            raise InputError(
                f"{where}: codebook_dim must be None or at least 1, got {self.codebook_dim}; "
                "use None for codes of the input size, or a smaller positive value for factorised codes"
            )
        if self.commitment_weight < 0 or self.codebook_weight < 0 or self.usage_entropy_weight < 0:
            raise InputError(
                f"{where}: loss weights must be >= 0, got commitment_weight={self.commitment_weight}, "
                f"codebook_weight={self.codebook_weight}, usage_entropy_weight={self.usage_entropy_weight}; "
                "use 0 to switch a term off"
            )
        if self.ema and not 0.0 <= self.ema_decay < 1.0:
            raise InputError(
                f"{where}: ema_decay must be in [0, 1) with ema=True, got {self.ema_decay}; "
                "typical values are 0.9 to 0.999"
            )
        if self.ema and self.laplace_epsilon <= 0:
            raise InputError(
                f"{where}: laplace_epsilon must be > 0 with ema=True (it keeps unused codes finite), "
                f"got {self.laplace_epsilon}; the default is 1e-5"
            )
        if self.kmeans_init and self.kmeans_iters < 1:
            raise InputError(
                f"{where}: kmeans_iters must be at least 1 with kmeans_init=True, got {self.kmeans_iters}; "
                "set kmeans_init=False to start from random codes"
            )
        if self.dead_code_steps < 0:
            raise InputError(
                f"{where}: dead_code_steps must be >= 0, got {self.dead_code_steps}; use 0 to disable restarts"
            )

    @classmethod
    def from_config(cls, config: QuantizerConfig) -> CodebookOptions:
        """The per-codebook part of a quantizer config (its fields of the same names)."""
        return cls(**{option.name: getattr(config, option.name) for option in fields(cls)})


def _check_integer(value: object, name: str, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: {name} must be an integer, got {value!r} ({type(value).__name__})")


# --------------------------------------------------------------------------------------------------
# Validation at the public boundaries (shared by the quantizer families)
# --------------------------------------------------------------------------------------------------
def check_options(options: object, caller: str) -> CodebookOptions:
    """Raise TypeError unless ``options`` is a ``CodebookOptions``; return it."""
    if not isinstance(options, CodebookOptions):
        raise TypeError(
            f"{caller} expects the codebook settings as a CodebookOptions, got {type(options).__name__}; "
            "pass e.g. CodebookOptions(codebook_size=1024, ema=False), or "
            "CodebookOptions.from_config(config.model.quantizer)"
        )
    return options


def check_latents(z: object, dim: int, caller: str) -> None:
    """Raise TypeError/ValueError unless ``z`` is a non-empty float tensor [B, dim, F]."""
    if not isinstance(z, Tensor):
        raise TypeError(f"{caller} expects latents as a torch.Tensor [B, D, F], got {type(z).__name__}")
    if not z.is_floating_point():
        raise TypeError(
            f"{caller} expects floating-point latents [B, D, F], got dtype {z.dtype}; "
            "pass the encoder output (codes go to decode())"
        )
    if z.dim() != 3 or z.shape[1] != dim:
        raise ValueError(
            f"{caller} expects latents [B, D, F] with D={dim}, got shape {tuple(z.shape)}; "
            "pass channels first (the encoder output), e.g. z.transpose(1, 2) if you hold [B, F, D]"
        )
    if z.shape[0] == 0 or z.shape[2] == 0:
        raise ValueError(f"{caller} got empty latents of shape {tuple(z.shape)}; expected B >= 1 and F >= 1")


def check_codes(codes: object, codebook_size: int, min_rows: int, max_rows: int, caller: str) -> Tensor:
    """Validate integer codes [B, K, F] with ``min_rows <= K <= max_rows``; return them as int64.

    Args:
        codes: [B, K, F] integer tensor (int64 from encode(), int16 from a token file).
        codebook_size: codes must lie in [0, codebook_size).
        min_rows, max_rows: the accepted range of K.
        caller: named in error messages.
    Returns:
        [B, K, F] int64.
    """
    if not isinstance(codes, Tensor):
        raise TypeError(f"{caller} expects codes as a torch.Tensor [B, K, F], got {type(codes).__name__}")
    if codes.dtype == torch.bool or codes.is_floating_point() or codes.is_complex():
        raise TypeError(
            f"{caller} expects integer codes, got dtype {codes.dtype}; codes come from encode() (int64) "
            "or a token file (int16): convert with codes.long()"
        )
    expected = f"K = {max_rows}" if min_rows == max_rows else f"{min_rows} <= K <= {max_rows}"
    if codes.dim() != 3 or not min_rows <= codes.shape[1] <= max_rows:
        hint = "; add the batch axis with codes[None]" if codes.dim() == 2 else ""
        raise InputError(
            f"{caller} expects codes [B, K, F] with {expected}, got shape {tuple(codes.shape)}{hint}"
        )
    if codes.shape[0] == 0 or codes.shape[2] == 0:
        raise InputError(
            f"{caller} got empty codes of shape {tuple(codes.shape)}; expected B >= 1 and F >= 1"
        )
    codes = codes.long()
    low, high = torch.aminmax(codes)
    if low < 0 or high >= codebook_size:
        raise InputError(
            f"{caller} got codes in [{int(low)}, {int(high)}] but codebook_size is {codebook_size} "
            f"(indices 0..{codebook_size - 1}); were they made by another model?"
        )
    return codes


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


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` in place over the DDP processes; a no-op in a single process."""
    if _is_distributed():
        dist.all_reduce(tensor)
    return tensor


def _broadcast_from_first(tensor: Tensor) -> Tensor:
    """Overwrite ``tensor`` in place with rank 0's copy; a no-op in a single process."""
    if _is_distributed():
        dist.broadcast(tensor, src=0)
    return tensor


def _cluster_statistics(
    x: Tensor, codes: Tensor, num_codes: int, weights: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Per-code (weighted) counts [C] and sums of assigned vectors [C, D], summed over DDP processes.

    Counts and sums travel in one tensor, so DDP costs one all-reduce per call.
    """
    weights = x.new_ones(x.shape[0]) if weights is None else weights
    stats = x.new_zeros(num_codes, 1 + x.shape[1])  # [C, 1 + D]: count, then sum
    stats.index_add_(0, codes, torch.cat([weights[:, None], x * weights[:, None]], dim=1))
    _all_reduce_sum(stats)
    return stats[:, 0], stats[:, 1:]


def _code_counts(codes: Tensor, num_codes: int, weights: Tensor) -> Tensor:
    """Per-code (weighted) counts [C], summed over DDP processes."""
    counts = weights.new_zeros(num_codes).index_add_(0, codes, weights)
    return _all_reduce_sum(counts)


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
    centroids = _broadcast_from_first(x[seeds].contiguous())
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
    gap = _masked_mean(two_nearest[:, 1] - two_nearest[:, 0], weights)
    probs = torch.softmax(-distances / gap.clamp_min(torch.finfo(x.dtype).tiny), dim=1)
    usage = _masked_mean(probs, weights)  # [C]
    entropy = -(usage * usage.clamp_min(torch.finfo(x.dtype).tiny).log()).sum()
    return math.log(codebook.shape[0]) - entropy


def _masked_mean(values: Tensor, weights: Tensor | None) -> Tensor:
    """Mean of ``values`` [N, ...] over its rows with weight 1 (all rows when ``weights`` is None); 0 if none."""
    if weights is None:
        return values.mean(dim=0)
    row_weights = weights.reshape(-1, *([1] * (values.dim() - 1)))
    return (values * row_weights).sum(dim=0) / weights.sum().clamp_min(1.0)


# --------------------------------------------------------------------------------------------------
# The quantizer
# --------------------------------------------------------------------------------------------------
class VectorQuantizer(Quantizer):
    """One codebook: latents [B, D, F] -> one code per frame, codes [B, 1, F].

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
        _check_integer(dim, "dim", "VectorQuantizer")
        if dim < 1:
            raise InputError(f"VectorQuantizer: dim must be at least 1, got {dim}")
        codebook_dim = dim if options.codebook_dim is None else options.codebook_dim
        if codebook_dim > dim:
            raise InputError(
                f"VectorQuantizer: codebook_dim must be at most dim={dim}, got {codebook_dim}; "
                "use None for codes of the latent size, or a smaller value for factorised codes"
            )

        self.dim = dim
        self.num_codebooks = 1
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
        self._initialized_seen = False  # host copy of `initialized` once True, to skip a sync per step

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
    def forward(self, z: Tensor, n_q: int | None = None) -> QuantizerOutput:
        """Quantize latents; in training mode also update the codebook.

        Args:
            z: [B, D, F] latents.
            n_q: None or 1 (one codebook).
        Returns:
            QuantizerOutput with codes [B, 1, F] and per-codebook losses of shape [1].
        """
        check_latents(z, self.dim, "VectorQuantizer.forward()")
        self._check_n_q(n_q, "VectorQuantizer.forward()")
        out = self.quantize(z)
        return QuantizerOutput(
            quantized=out.quantized,
            codes=out.codes[:, None],
            loss=out.loss,
            commitment_loss=out.commitment_loss[None],
            codebook_loss=out.codebook_loss[None],
        )

    @torch.no_grad()
    def encode(self, z: Tensor, n_q: int | None = None) -> Tensor:
        """[B, D, F] latents -> [B, 1, F] int64 codes (never changes the codebook)."""
        check_latents(z, self.dim, "VectorQuantizer.encode()")
        self._check_n_q(n_q, "VectorQuantizer.encode()")
        return self.lookup(z)[:, None]

    def decode(self, codes: Tensor) -> Tensor:
        """[B, 1, F] integer codes -> [B, D, F] quantized latents."""
        codes = check_codes(codes, self.codebook_size, 1, 1, "VectorQuantizer.decode()")
        return self.embed(codes[:, 0])

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

            commitment_loss = _masked_mean((x_loss - q.detach()).pow(2).mean(dim=1), weights)
            loss = self.options.commitment_weight * commitment_loss
            if self.options.ema:
                codebook_loss = commitment_loss.detach()  # same value; reported only, the EMA moves the codes
            else:
                codebook_loss = _masked_mean((x.detach() - q).pow(2).mean(dim=1), weights)
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
    def _check_n_q(self, n_q: int | None, caller: str) -> None:
        if n_q not in (None, 1):
            raise InputError(
                f"{caller}: a VectorQuantizer has one codebook, so n_q must be None or 1, got {n_q!r}"
            )

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

    def _is_initialized(self) -> bool:
        # Reading the buffer is a host sync on GPU: do it only until it says True.
        if not self._initialized_seen:
            self._initialized_seen = bool(self.initialized)
        return self._initialized_seen

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._initialized_seen = False  # the loaded `initialized` may differ from the cached one
        super()._load_from_state_dict(*args, **kwargs)

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
        samples = _broadcast_from_first(x[picks].contiguous())  # [num_dead, Dc]
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
