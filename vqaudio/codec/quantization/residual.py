"""Residual vector quantization with quantizer dropout.

Zeghidour et al. 2021, "SoundStream: An End-to-End Neural Audio Codec": stage i quantizes what stages
< i missed, so the first n_q codes of a frame are a coarser version of all K; training with quantizer
dropout (a random n_q per example) makes one model usable at every bitrate from 1 to K codebooks.
Per-example dropout masks and masked losses follow Kumar et al. 2023 (DAC). A stage is a codebook of any
kind (``model.quantizer.codebook``: vq, gumbel or fsq); each quantizes the residual of the stages before it.

The gradient paths matter (facebookresearch/encodec#25): see ``ResidualVQ.forward``.

Held first codes (``encode(..., hold=)``, encoding only; issue 26): a frame keeps the previous frame's first code
while the whole stack's error with it stays within a margin of the error with its own nearest code, so the first
codebook follows slower units than frames while the later stages absorb the difference (``ResidualVQ.encode``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from vqaudio.codec.quantization.base import (
    Codebook,
    CodebookOptions,
    Quantizer,
    QuantizerOutput,
    check_codes,
    check_latents,
    check_options,
)
from vqaudio.codec.quantization.kinds import build_codebook
from vqaudio.config import FIRST_CODEBOOK_HOLD, check_value
from vqaudio.errors import InputError

# held_first_codes: the stack errors of runs begun up to HOLD_LAGS frames before are computed for every frame at
# once; an older run's, HOLD_BLOCK frames ahead at a time
HOLD_LAGS = 3
HOLD_BLOCK = 16


class ResidualVQ(Quantizer):
    """K codebooks in sequence: latents [B, D, F] -> codes [B, n_q, F] for any 1 <= n_q <= K.

    Args:
        dim: D, channels of the latents.
        num_codebooks: K, the number of stages.
        options: the settings of every stage's codebook (each stage has its own, of kind
            ``options.codebook``), except that with nearest-code (vq) stages only the first takes the
            usage-entropy penalty: it carries the most and its usage is the most skewed, and the penalty's
            gradient grows as a stage's residuals shrink (on the embedded tokenizer, 30x the first stage's
            over the other seven), so on later stages it would drown the reconstruction. Gumbel stages all
            take theirs: it acts on their logits, whose scale does not shrink with the residual.
        quantizer_dropout: in training, the probability that an example uses a random n_q in [1, K)
            instead of all K stages; 0 disables.
    """

    def __init__(
        self,
        dim: int,
        num_codebooks: int,
        options: CodebookOptions = CodebookOptions(),
        quantizer_dropout: float = 0.5,
    ) -> None:
        super().__init__()
        options = check_options(options, "ResidualVQ")
        if num_codebooks < 1:
            raise InputError(f"ResidualVQ: num_codebooks must be at least 1, got {num_codebooks}")
        if not 0.0 <= quantizer_dropout <= 1.0:
            raise InputError(
                f"ResidualVQ: quantizer_dropout is a probability in [0, 1], got {quantizer_dropout}"
            )
        self.dim = dim
        self.num_codebooks = num_codebooks
        self.codebook_size = options.codebook_size
        self.options = options
        self.quantizer_dropout = quantizer_dropout
        later = options if options.codebook == "gumbel" else replace(options, usage_entropy_weight=0.0)
        self.stages = nn.ModuleList(
            build_codebook(dim, options if index == 0 else later) for index in range(num_codebooks)
        )

    def forward(self, z: Tensor, n_q: int | None = None) -> QuantizerOutput:
        """Quantize with the first ``n_q`` stages; in training mode also update the codebooks.

        Args:
            z: [B, D, F] latents.
            n_q: stages to use, 1..K; None: K. In training, quantizer dropout may give an example fewer.
        Returns:
            QuantizerOutput with codes [B, n_q, F] and per-stage losses [n_q]. A stage's losses are
            averaged over the examples that use it (0 when none does). Under quantizer dropout the codes
            of an example's unused stages are still valid indices, but ``quantized`` leaves them out.
        """
        check_latents(z, self.dim, "ResidualVQ.forward()")
        n_q = self._check_n_q(n_q, "ResidualVQ.forward()")
        stages_per_example = self._sample_stages_per_example(z, n_q)  # [B] or None (all use n_q)

        # Two views of the same residual values, differing only in their gradients:
        # - `residual` subtracts the code vectors detached, so d(residual)/dz = I and every stage's
        #   commitment loss reaches the encoder. Subtracting the straight-through output instead makes
        #   every residual after the first constant w.r.t. z (the EnCodec bug, encodec#25).
        # - `surrogate` subtracts each stage's straight-through output: the summed output then has the
        #   gradient of one straight-through estimator (the identity for unfactorised codes), not n_q
        #   times it, whatever n_q an example uses.
        # Gumbel and FSQ stages have no commitment loss and ignore `residual`: their gradient reaches z through
        # their own logits or projection, along `surrogate` (so a later stage's gradient also flows through
        # what the earlier stages' soft outputs made of its input).
        stages = self._stages()
        residual = surrogate = z
        quantized: Tensor | None = None
        codes, losses, commitment_losses, codebook_losses = [], [], [], []
        for index in range(n_q):
            active = None if stages_per_example is None else stages_per_example > index  # [B] bool
            out = stages[index].quantize(surrogate, active=active, loss_input=residual)
            contribution = out.quantized if active is None else out.quantized * active[:, None, None]
            quantized = contribution if quantized is None else quantized + contribution
            surrogate = surrogate - out.quantized
            residual = residual - out.quantized.detach()  # the code vectors themselves, without a gradient
            codes.append(out.codes)
            losses.append(out.loss)
            commitment_losses.append(out.commitment_loss)
            codebook_losses.append(out.codebook_loss)
        assert quantized is not None  # n_q >= 1
        return QuantizerOutput(
            quantized=quantized,
            codes=torch.stack(codes, dim=1),  # [B, n_q, F]
            loss=torch.stack(losses).sum(),
            commitment_loss=torch.stack(commitment_losses),
            codebook_loss=torch.stack(codebook_losses),
        )

    @torch.no_grad()
    def encode(
        self, z: Tensor, n_q: int | None = None, hold: float = 0.0, previous: Tensor | None = None
    ) -> Tensor:
        """[B, D, F] latents -> [B, n_q, F] int64 codes (n_q None: K; never changes the codebooks).

        Args:
            z: [B, D, F] latents, frames in time order.
            n_q: stages to use, 1..K; None: K.
            hold: 0 (default): every stage looks up its own input (the nearest code). Above 0: held first codes
                (``held_first_codes``), the later stages quantizing what they leave. Encoding only: training
                (``forward``) never holds. Either way the codes of an n_q encode are the first n_q rows of a full
                one.
            previous: [B] the first stage's code of the frame before ``z[..., 0]``, for input that continues
                earlier frames (a stream); None: the first frame takes its own code. Used only with hold > 0.
        """
        check_latents(z, self.dim, "ResidualVQ.encode()")
        n_q = self._check_n_q(n_q, "ResidualVQ.encode()")
        first_codes = None if hold == 0 else self.held_first_codes(z, hold, previous)
        residual = z
        codes = []
        for index, stage in enumerate(self._stages()[:n_q]):
            if index == 0 and first_codes is not None:
                stage_codes = first_codes
            else:
                stage_codes = stage.lookup(residual)  # [B, F]
            codes.append(stage_codes)
            if index + 1 < n_q:
                residual = residual - stage.embed(stage_codes)
        return torch.stack(codes, dim=1)

    @torch.no_grad()
    def held_first_codes(self, z: Tensor, hold: float, previous: Tensor | None = None) -> Tensor:
        """The first stage's codes with hysteresis along the frames: [B, D, F] latents -> [B, F] int64.

        Frame t keeps the code of frame t - 1 when the error of the whole stack with it,
        ``||z_t - q_t(code_{t-1})||^2``, is at most ``(1 + hold)`` times the error with the frame's own first code
        ``||z_t - q_t(best_t)||^2``, and takes ``best_t`` otherwise; ``q_t(c)`` is first code ``c`` plus what stages
        2..K look up for the rest (greedy, as ``encode`` does). Measured at the end of the stack, not at
        the first stage: there a frame's previous code is typically 8 times as far as its nearest (the embedded
        tokenizer), while the later stages make up most of that (docs/EXPERIMENTS.md, issue 26); at a fixed depth
        (all K), so that an n_q encode is a prefix of a full one. A held sequence never has more runs than
        ``best``: every change of code is to ``best_t``, after ``best`` has changed. The decisions run over the
        frames in order, vectorised over the batch.

        Args:
            z: [B, D, F] latents, frames in time order.
            hold: the margin, in [0, 100] (``vqaudio.config.FIRST_CODEBOOK_HOLD``); 0 still keeps a code whose
                stack error is no larger.
            previous: [B] int64 first code of the frame before ``z[..., 0]``; None: the first frame takes best_0.
        Returns:
            [B, F] int64 first-stage codes.
        """
        check_latents(z, self.dim, "ResidualVQ.held_first_codes()")
        check_value("hold", hold, FIRST_CODEBOOK_HOLD)
        first = self._stages()[0]
        best = first.lookup(z)  # [B, F]
        if previous is not None:
            previous = self._check_previous(previous, best)
        batch_size, num_frames = best.shape
        # The code a frame may keep is the own code of the frame its run began at. The stack errors under the own
        # codes of frames t, t - 1, ..., t - HOLD_LAGS are computed for all frames at once (a matrix product per
        # stage rather than one per frame, which reads every codebook for one vector); a run begun earlier, or
        # before the input, gets its errors for the next HOLD_BLOCK frames at once, while it lasts.
        lags = min(HOLD_LAGS, num_frames - 1)
        shifted = [best] + [torch.cat([best[:, :lag], best[:, :-lag]], dim=1) for lag in range(1, lags + 1)]
        errors = torch.stack([self._stack_error(z - first.embed(codes)) for codes in shifted]).cpu().numpy()
        own_codes = best.cpu().numpy()
        limit = (1.0 + hold) * errors[0]  # [B, F]
        codes = np.empty_like(own_codes)
        rows = np.arange(batch_size)
        block_code = np.full(
            batch_size, -1, dtype=np.int64
        )  # per row: the older run's code, its first frame,
        block_start = np.zeros(batch_size, dtype=np.int64)  # and its errors from there
        block_errors = np.empty((batch_size, HOLD_BLOCK), dtype=errors.dtype)
        if previous is None:
            held, origin, begin = own_codes[:, 0].copy(), np.zeros(batch_size, dtype=np.int64), 1
            codes[:, 0] = held
        else:  # a code from before the input: no lag of the table
            held, origin, begin = previous.cpu().numpy(), np.full(batch_size, -lags - 1, dtype=np.int64), 0
        for frame in range(begin, num_frames):
            own = own_codes[:, frame]
            differs = held != own  # where equal, keeping is taking the own code
            if differs.any():
                lag = frame - origin  # >= 1
                error = errors[np.minimum(lag, lags), rows, frame]
                untabled = np.flatnonzero(differs & (lag > lags))
                if untabled.size:
                    stale = untabled[
                        (block_code[untabled] != held[untabled])
                        | (frame >= block_start[untabled] + HOLD_BLOCK)
                    ]
                    if stale.size:
                        stop = min(frame + HOLD_BLOCK, num_frames)
                        kept = torch.from_numpy(held[stale]).to(best.device)[:, None].expand(-1, stop - frame)
                        residual = z[stale, :, frame:stop] - first.embed(kept)  # [n, D, stop - frame]
                        block_errors[stale, : stop - frame] = self._stack_error(residual).cpu().numpy()
                        block_code[stale], block_start[stale] = held[stale], frame
                    error[untabled] = block_errors[untabled, frame - block_start[untabled]]
                held = np.where(differs & (error > limit[:, frame]), own, held)
            origin = np.where(held == own, frame, origin)
            codes[:, frame] = held
        return torch.from_numpy(codes).to(best.device)

    def _stack_error(self, residual: Tensor) -> Tensor:
        """[B, D, F] what the first stage left -> [B, F] squared error after stages 2..K quantize it."""
        for stage in self._stages()[1:]:
            residual = residual - stage.embed(stage.lookup(residual))
        return residual.float().pow(2).sum(dim=1)

    def _check_previous(self, previous: Tensor, best: Tensor) -> Tensor:
        """``previous`` as [B] int64 codes on the codes' device; InputError if it is not that."""
        if (
            not isinstance(previous, Tensor)
            or previous.shape != best.shape[:1]
            or previous.is_floating_point()
            or previous.dtype == torch.bool
        ):
            shape = tuple(previous.shape) if isinstance(previous, Tensor) else type(previous).__name__
            raise InputError(
                f"ResidualVQ.held_first_codes(): previous must be the [B] = [{best.shape[0]}] integer first codes of "
                f"the frame before, got {shape}"
            )
        previous = previous.to(device=best.device, dtype=torch.long)
        if bool(((previous < 0) | (previous >= self.codebook_size)).any()):
            raise InputError(
                f"ResidualVQ.held_first_codes(): previous holds codes outside [0, {self.codebook_size})"
            )
        return previous

    def decode(self, codes: Tensor) -> Tensor:
        """[B, K', F] integer codes of the first K' <= K stages -> [B, D, F] quantized latents."""
        codes = check_codes(codes, self.codebook_size, 1, self.num_codebooks, "ResidualVQ.decode()")
        # Same summation order as forward, so eval-mode decode(encode(z)) equals forward(z).quantized exactly.
        stages = self._stages()
        quantized = stages[0].embed(codes[:, 0])
        for index in range(1, codes.shape[1]):
            quantized = quantized + stages[index].embed(codes[:, index])
        return quantized

    @torch.no_grad()
    def codebooks(self) -> Tensor:
        """[K, C, codebook_dim] every stage's code vectors."""
        return torch.cat([stage.codebooks() for stage in self._stages()])

    @torch.no_grad()
    def latent_codebooks(self) -> Tensor:
        """[K, C, D] every stage's code vectors in latent space; ``decode`` sums one per stage."""
        return torch.cat([stage.latent_codebooks() for stage in self._stages()])

    def _stages(self) -> list[Codebook]:
        return cast(list[Codebook], list(self.stages))

    def _check_n_q(self, n_q: int | None, caller: str) -> int:
        if n_q is None:
            return self.num_codebooks
        if isinstance(n_q, bool) or not isinstance(n_q, int) or not 1 <= n_q <= self.num_codebooks:
            raise InputError(
                f"{caller}: n_q must be an integer between 1 and num_codebooks={self.num_codebooks}, "
                f"got {n_q!r}"
            )
        return n_q

    def _sample_stages_per_example(self, z: Tensor, n_q: int) -> Tensor | None:
        """Quantizer dropout: [B] stages each example uses, or None when all use n_q."""
        if not self.training or self.quantizer_dropout == 0.0 or n_q == 1:
            return None
        batch_size = z.shape[0]
        dropped = torch.rand(batch_size, device=z.device) < self.quantizer_dropout
        fewer = torch.randint(1, n_q, (batch_size,), device=z.device)  # [1, n_q): strictly fewer stages
        return torch.where(dropped, fewer, torch.full_like(fewer, n_q))
