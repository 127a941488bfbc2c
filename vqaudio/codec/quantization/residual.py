"""Residual vector quantization with quantizer dropout.

Zeghidour et al. 2021, "SoundStream: An End-to-End Neural Audio Codec": stage i quantizes what stages
< i missed, so the first n_q codes of a frame are a coarser version of all K; training with quantizer
dropout (a random n_q per example) makes one model usable at every bitrate from 1 to K codebooks.
Per-example dropout masks and masked losses follow Kumar et al. 2023 (DAC). A stage is a codebook of any
kind (``model.quantizer.codebook``: vq, gumbel or fsq); each quantizes the residual of the stages before it.

The gradient paths matter (facebookresearch/encodec#25): see ``ResidualVQ.forward``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import cast

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
from vqaudio.errors import InputError


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
    def encode(self, z: Tensor, n_q: int | None = None) -> Tensor:
        """[B, D, F] latents -> [B, n_q, F] int64 codes (n_q None: K; never changes the codebooks)."""
        check_latents(z, self.dim, "ResidualVQ.encode()")
        n_q = self._check_n_q(n_q, "ResidualVQ.encode()")
        residual = z
        codes = []
        for index, stage in enumerate(self._stages()[:n_q]):
            stage_codes = stage.lookup(residual)  # [B, F]
            codes.append(stage_codes)
            if index + 1 < n_q:
                residual = residual - stage.embed(stage_codes)
        return torch.stack(codes, dim=1)

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
