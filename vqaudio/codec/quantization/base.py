"""The interface every quantizer family implements (one file per family beside this one).

Two levels: ``Quantizer`` maps latents [B, D, F] to K codes per frame and back; ``Codebook`` is the one-code
building block that the layouts (``ResidualVQ``, ``GroupVQ``) stack, one per stage or group. What a codebook
is, ``CodebookOptions.codebook`` picks (``model.quantizer.codebook``): ``vq`` (vq.py, nearest code),
``gumbel`` (gumbel.py, Gumbel-softmax over learned logits) or ``fsq`` (fsq.py, finite scalar quantization).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vqaudio.config import QuantizerConfig
from vqaudio.errors import InputError


class QuantizerOutput(NamedTuple):
    """What ``Quantizer.forward`` returns.

    quantized: [B, D, F] quantized latents. Its value is exactly the sum of the code vectors (so in eval
        mode it equals ``decode(codes)``); the straight-through estimator gives it a gradient w.r.t. the
        input ``z`` (the identity for unfactorised nearest-code VQ).
    codes: [B, K, F] int64 code indices, K = codebooks used by this call (n_q).
    loss: scalar, the weighted codebook + commitment losses summed over codebooks (add to the training loss).
    commitment_loss: [K] unweighted ||z - sg(q)||^2 per codebook, in code space, averaged over the examples
        that use the codebook. It keeps its graph (so each term can be differentiated); detach to log it.
        Gumbel and FSQ codebooks have no commitment loss: theirs is the quantization error, detached.
    codebook_loss: [K] unweighted ||sg(z) - q||^2 per codebook; computed with EMA too (then detached and
        not part of ``loss``, since the EMA moves the codes); Gumbel and FSQ: as ``commitment_loss``.
    """

    quantized: Tensor
    codes: Tensor
    loss: Tensor
    commitment_loss: Tensor
    codebook_loss: Tensor


class Quantizer(nn.Module):
    """Latents [B, D, F] -> K integer codes per frame, and back.

    Subclasses set ``dim``, ``num_codebooks`` and ``codebook_size``.
    """

    dim: int
    num_codebooks: int
    codebook_size: int

    def forward(self, z: Tensor, n_q: int | None = None) -> QuantizerOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, z: Tensor, n_q: int | None = None) -> Tensor:  # pragma: no cover - abstract
        """[B, D, F] -> codes [B, K, F] (K = n_q or num_codebooks)."""
        raise NotImplementedError

    def decode(self, codes: Tensor) -> Tensor:  # pragma: no cover - abstract
        """codes [B, K, F] -> quantized latents [B, D, F]."""
        raise NotImplementedError

    @torch.no_grad()
    def codebooks(self) -> Tensor:  # pragma: no cover - abstract
        """[K, codebook_size, D_code] the code vectors as the decoder sees them (for inspection)."""
        raise NotImplementedError

    @torch.no_grad()
    def latent_codebooks(self) -> Tensor:  # pragma: no cover - abstract
        """[K, codebook_size, D] every code's contribution to the quantized latent: ``decode(codes)[b, :, f]`` is
        the sum over k of ``latent_codebooks()[k, codes[b, k, f]]`` (a copy, in the codebooks' dtype)."""
        raise NotImplementedError

    def set_training_step(self, step: int) -> None:
        """Tell every codebook the trainer's global step (optimizer updates done), before a training forward.

        Schedules that follow training (the Gumbel temperature) read it; it is not part of the weights, so a
        resumed run, which restores the step, reproduces them exactly.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"set_training_step() expects a step count >= 0, got {step!r}")
        for module in self.modules():
            if isinstance(module, Codebook):
                module.training_step = step


class CodebookOutput(NamedTuple):
    """What ``Codebook.quantize`` returns: one codebook applied to latents [B, D, F].

    quantized: [B, D, F] the code vectors (exactly), with a straight-through gradient to the input.
    codes: [B, F] int64 code indices.
    loss: scalar, what this codebook adds to the training loss (vq: commitment_weight * commitment_loss,
        + codebook_weight * codebook_loss without EMA; + the usage-entropy penalty for vq and gumbel).
    commitment_loss: scalar, unweighted ||x - sg(q)||^2 in code space (vq: keeps its graph; gumbel and fsq:
        the quantization error, detached).
    codebook_loss: scalar, unweighted ||sg(x) - q||^2 in code space (detached with EMA, gumbel and fsq).
    """

    quantized: Tensor
    codes: Tensor
    loss: Tensor
    commitment_loss: Tensor
    codebook_loss: Tensor


class Codebook(Quantizer):
    """One codebook: latents [B, D, F] -> one code per frame, codes [B, 1, F]; what the layouts stack.

    A kind implements ``quantize`` (training and eval forward of one codebook), ``lookup`` (codes, no
    gradient, nothing changed), ``embed`` (codes -> latents), ``codebooks`` and ``latent_codebooks``; the public
    ``forward``/``encode``/``decode`` here validate and call them. In eval mode ``embed(lookup(z))`` must equal
    ``quantize(z).quantized`` exactly.
    """

    num_codebooks = 1
    # Buffers that only training reads (statistics, counters): released models leave them out, and
    # ``reset_training_state`` restarts them after such a model is loaded. None for most kinds.
    TRAINING_STATE: tuple[str, ...] = ()
    # The trainer's global step, set by ``Quantizer.set_training_step`` (0 when used outside a trainer).
    training_step: int = 0
    # Kinds that initialise themselves on the first training batch (vq's k-means, the input maps of gumbel and
    # fsq) keep whether they did in this buffer (saved with the weights, so a loaded model does not do it again).
    initialized: Tensor

    def __init__(self) -> None:
        super().__init__()
        self._initialized_seen = False  # host copy of `initialized` once True, to skip a sync per step

    # ---------------------------------------------------------------------------------------------- public
    def forward(self, z: Tensor, n_q: int | None = None) -> QuantizerOutput:
        """Quantize latents; in training mode also update the codebook (vq's EMA and restarts).

        Args:
            z: [B, D, F] latents.
            n_q: None or 1 (one codebook).
        Returns:
            QuantizerOutput with codes [B, 1, F] and per-codebook losses of shape [1].
        """
        caller = f"{type(self).__name__}.forward()"
        check_latents(z, self.dim, caller)
        self._check_n_q(n_q, caller)
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
        caller = f"{type(self).__name__}.encode()"
        check_latents(z, self.dim, caller)
        self._check_n_q(n_q, caller)
        return self.lookup(z)[:, None]

    def decode(self, codes: Tensor) -> Tensor:
        """[B, 1, F] integer codes -> [B, D, F] quantized latents."""
        codes = check_codes(codes, self.codebook_size, 1, 1, f"{type(self).__name__}.decode()")
        return self.embed(codes[:, 0])

    @torch.no_grad()
    def reset_training_state(self) -> None:
        """Restart the ``TRAINING_STATE`` buffers (after loading a released model, which has none)."""

    # ------------------------------------------------------------------ building blocks of the layouts
    def quantize(
        self, z: Tensor, active: Tensor | None = None, loss_input: Tensor | None = None
    ) -> CodebookOutput:  # pragma: no cover - abstract
        """Quantize [B, D, F] latents (not validated: the public ``forward`` of each layout does that).

        Args:
            z: [B, D, F] latents; the output's straight-through gradient flows to them.
            active: [B] bool, the examples this codebook serves (ResidualVQ's quantizer dropout). The others
                are still quantized (valid codes) but left out of the losses and statistics. None: all.
            loss_input: [B, D, F] the same values as ``z`` reached through another graph, for losses that must
                reach the encoder on their own path (vq's commitment loss in ResidualVQ). None: ``z``.
        Returns:
            CodebookOutput.
        """
        raise NotImplementedError

    @torch.no_grad()
    def lookup(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        """[B, D, F] latents -> [B, F] int64 codes (not validated; deterministic; never changes anything)."""
        raise NotImplementedError

    def embed(self, codes: Tensor) -> Tensor:  # pragma: no cover - abstract
        """[B, F] int64 codes -> [B, D, F] code vectors in latent space (not validated)."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------- private
    def _check_n_q(self, n_q: int | None, caller: str) -> None:
        if n_q not in (None, 1):
            raise InputError(
                f"{caller}: a {type(self).__name__} has one codebook, so n_q must be None or 1, got {n_q!r}"
            )

    def _is_initialized(self) -> bool:
        # Reading the buffer is a host sync on GPU: do it only until it says True.
        if not self._initialized_seen:
            self._initialized_seen = bool(self.initialized)
        return self._initialized_seen

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._initialized_seen = False  # the loaded `initialized` may differ from the cached one
        super()._load_from_state_dict(*args, **kwargs)


# --------------------------------------------------------------------------------------------------
# The settings of one codebook (shared by the layouts and the kinds)
# --------------------------------------------------------------------------------------------------
CodebookKind = Literal["vq", "gumbel", "fsq"]
CODEBOOK_KINDS: tuple[str, ...] = ("vq", "gumbel", "fsq")


@dataclass(frozen=True)
class CodebookOptions:
    """Everything about one codebook except the size of its input; RVQ stages and groups share one.

    The defaults equal ``QuantizerConfig``'s (the single home of defaults; a test keeps them equal).
    Settings that depend on the input size (``codebook_dim <= dim``) are checked by ``VectorQuantizer``.
    Settings of another kind than ``codebook`` are ignored (and not checked).
    """

    codebook: CodebookKind = "vq"  # what a codebook is: nearest code (vq), Gumbel-softmax (gumbel), FSQ (fsq)
    codebook_size: int = 1024  # C, number of codes
    # vq: code space; None: the input size; smaller: factorised, L2-normalised
    codebook_dim: int | None = None
    commitment_weight: float = (
        0.25  # vq: beta in beta * ||x - sg(q)||^2, keeps the encoder close to its codes
    )
    codebook_weight: float = 1.0  # vq: weight of ||sg(x) - q||^2, moving codes by gradient (unused with ema)
    ema: bool = True  # vq: move codes (a buffer) by EMA of their assigned inputs instead of the codebook loss
    ema_decay: float = 0.99  # vq: EMA decay per training step, in [0, 1)
    laplace_epsilon: float = 1e-5  # vq: additive smoothing of the EMA cluster sizes, so no code divides by 0
    kmeans_init: bool = True  # vq: initialise the codebook with k-means on the first training batch
    kmeans_iters: int = 10  # vq: Lloyd iterations of that k-means
    dead_code_steps: int = 200  # vq: re-seed a code unused for this many training steps (0: never)
    # vq and gumbel: weight of the usage-entropy penalty in nats (0: off); see vq.py and gumbel.py
    usage_entropy_weight: float = 0.0
    # gumbel: the temperature of the soft sample, annealed from start to end over anneal_steps training steps
    gumbel_temperature_start: float = 0.5
    gumbel_temperature_end: float = 0.1
    gumbel_anneal_steps: int = 10000
    gumbel_anneal: Literal["exponential", "cosine"] = "exponential"
    # fsq: levels per dimension; codebook_size must equal their product
    fsq_levels: tuple[int, ...] = (8, 8, 4, 4)

    def __post_init__(self) -> None:
        where = "CodebookOptions"
        for name in ("codebook_size", "kmeans_iters", "dead_code_steps", "gumbel_anneal_steps"):
            check_integer(getattr(self, name), name, where)
        if self.codebook not in CODEBOOK_KINDS:
            raise InputError(
                f"{where}: codebook must be one of {list(CODEBOOK_KINDS)}, got {self.codebook!r}"
            )
        if self.codebook_dim is not None:
            check_integer(self.codebook_dim, "codebook_dim", where)
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
        if self.codebook == "gumbel":
            self._check_gumbel(where)
        if self.codebook == "fsq":
            self._check_fsq(where)

    def _check_gumbel(self, where: str) -> None:
        temperatures = (self.gumbel_temperature_start, self.gumbel_temperature_end)
        if not all(math.isfinite(t) and t > 0 for t in temperatures):
            raise InputError(
                f"{where}: Gumbel temperatures must be finite and > 0, got gumbel_temperature_start="
                f"{self.gumbel_temperature_start}, gumbel_temperature_end={self.gumbel_temperature_end}"
            )
        if self.gumbel_anneal_steps < 1:
            raise InputError(
                f"{where}: gumbel_anneal_steps must be at least 1, got {self.gumbel_anneal_steps}; "
                "for a constant temperature make gumbel_temperature_end equal gumbel_temperature_start"
            )
        if self.gumbel_anneal not in ("exponential", "cosine"):
            raise InputError(
                f"{where}: gumbel_anneal must be 'exponential' or 'cosine', got {self.gumbel_anneal!r}"
            )

    def _check_fsq(self, where: str) -> None:
        levels = self.fsq_levels
        if not isinstance(levels, tuple) or not levels:
            raise TypeError(f"{where}: fsq_levels must be a non-empty tuple of integers, got {levels!r}")
        for level in levels:
            check_integer(level, "every fsq_levels entry", where)
        if min(levels) < 2:
            raise InputError(f"{where}: every fsq_levels entry must be at least 2, got {list(levels)}")
        if math.prod(levels) != self.codebook_size:
            raise InputError(
                f"{where}: codebook='fsq' has prod(fsq_levels) = {' x '.join(map(str, levels))} = "
                f"{math.prod(levels)} codes, but codebook_size is {self.codebook_size}; make them equal"
            )

    @classmethod
    def from_config(cls, config: QuantizerConfig) -> CodebookOptions:
        """The per-codebook part of a quantizer config (its fields of the same names)."""
        return cls(**{option.name: getattr(config, option.name) for option in fields(cls)})


# --------------------------------------------------------------------------------------------------
# Validation at the public boundaries (shared by the quantizer families)
# --------------------------------------------------------------------------------------------------
def check_integer(value: object, name: str, where: str) -> None:
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


def masked_mean(values: Tensor, weights: Tensor | None) -> Tensor:
    """Mean of ``values`` [N, ...] over its rows with weight 1 (all rows when ``weights`` is None); 0 if none."""
    if weights is None:
        return values.mean(dim=0)
    row_weights = weights.reshape(-1, *([1] * (values.dim() - 1)))
    return (values * row_weights).sum(dim=0) / weights.sum().clamp_min(1.0)


# --------------------------------------------------------------------------------------------------
# DDP helpers and first-batch initialisation (shared by the kinds)
# --------------------------------------------------------------------------------------------------
def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` in place over the DDP processes; a no-op in a single process."""
    if _is_distributed():
        dist.all_reduce(tensor)
    return tensor


def broadcast_from_first(tensor: Tensor) -> Tensor:
    """Overwrite ``tensor`` in place with rank 0's copy; a no-op in a single process."""
    if _is_distributed():
        dist.broadcast(tensor, src=0)
    return tensor


@torch.no_grad()
def standardise_outputs(linear: nn.Linear, x: Tensor) -> None:
    """Rescale and shift ``linear`` so that its outputs on ``x`` have mean 0 and standard deviation 1 each.

    A data-dependent initialisation (Salimans & Kingma 2016, "Weight Normalization", section 3): an untrained
    encoder's latents share a large offset and vary little around it (about 0.35 against 0.19 per channel in
    rvq_mel), so a randomly initialised map sees nearly the same input in every frame: FSQ would round every
    frame to the same few grid points, a Gumbel codebook would rank its codes alike for every frame. The
    statistics are summed over the DDP processes, so every replica gets the same map.

    Args:
        linear: the map to change in place.
        x: [N, D_in] a batch of its inputs.
    """
    y = linear(x)  # [N, D_out]
    stats = torch.cat([y.new_full((1,), float(y.shape[0])), y.sum(dim=0), y.pow(2).sum(dim=0)])
    all_reduce_sum(stats)
    count, sums, squares = stats[0], stats[1 : 1 + y.shape[1]], stats[1 + y.shape[1] :]
    mean = sums / count
    std = (squares / count - mean.pow(2)).clamp_min(1e-12).sqrt()
    linear.weight.div_(std[:, None])
    if linear.bias is not None:
        linear.bias.sub_(mean).div_(std)
