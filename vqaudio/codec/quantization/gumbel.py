"""One Gumbel-softmax codebook: a sampled code per frame in training, the most likely one at inference.

Jang et al. 2017, "Categorical Reparameterization with Gumbel-Softmax", and Maddison et al. 2017, "The
Concrete Distribution"; as a speech quantizer, Baevski et al. 2020, "vq-wav2vec" and "wav2vec 2.0": a linear
map gives each frame C logits, a code is drawn from their softmax by the Gumbel-max trick (training) or taken
as their argmax (eval: deterministic codes), and its vector is looked up in a learned codebook. The
straight-through estimator passes the gradient of the one-hot sample through the softmax of the perturbed
logits at a temperature ``tau``, annealed from ``gumbel_temperature_start`` to ``gumbel_temperature_end``
over training (``gumbel_temperature``): a high temperature spreads the gradient over many codes early on,
a low one makes it follow the hard sample. No commitment loss and no codebook statistics: the codes and
the logits learn from the reconstruction alone, and the optional usage-entropy penalty (wav2vec 2.0's
diversity loss) keeps the batch's average code distribution near uniform.

The temperature is a function of the trainer's global step (``Quantizer.set_training_step``), not of a
counter in the module, so a resumed run anneals exactly as an uninterrupted one; the sampling noise comes
from the global torch generator, which the trainer seeds from the step.
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
    standardise_outputs,
)


def gumbel_temperature(step: int, options: CodebookOptions) -> float:
    """The Gumbel-softmax temperature after ``step`` optimizer updates.

    ``progress = min(step, gumbel_anneal_steps) / gumbel_anneal_steps``; exponential:
    ``start * (end / start) ** progress`` (a constant ratio per step, as wav2vec 2.0's decay, reaching ``end``
    exactly); cosine: ``end + (start - end) * (1 + cos(pi * progress)) / 2``. ``end`` after the anneal.
    """
    start, end = options.gumbel_temperature_start, options.gumbel_temperature_end
    progress = min(max(step, 0), options.gumbel_anneal_steps) / options.gumbel_anneal_steps
    if options.gumbel_anneal == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return start * (end / start) ** progress


def usage_kl_to_uniform(logits: Tensor, weights: Tensor | None = None) -> Tensor:
    """KL(mean softmax || uniform) = log C - H(mean softmax) in nats: 0 when the batch uses every code alike.

    The mean is over the frames that count (``weights``), of the noise-free softmax at temperature 1, as in
    wav2vec 2.0's diversity loss; it pushes the logits of frames towards codes the batch uses little.

    Args:
        logits: [N, C].
        weights: [N] 1 for the frames that count (quantizer dropout); None: all.
    Returns:
        scalar in [0, log C].
    """
    usage = masked_mean(torch.softmax(logits, dim=1), weights)  # [C]
    entropy = -(usage * usage.clamp_min(torch.finfo(usage.dtype).tiny).log()).sum()
    return math.log(logits.shape[1]) - entropy


class GumbelQuantizer(Codebook):
    """One Gumbel-softmax codebook: latents [B, D, F] -> one code per frame, codes [B, 1, F].

    Args:
        dim: D, channels of the latents (the code vectors have D channels too).
        options: ``codebook_size`` (C), the temperature schedule (``gumbel_*``) and ``usage_entropy_weight``
            (the weight of ``usage_kl_to_uniform`` in the loss); vq's settings are ignored.
    """

    codebook: Tensor

    def __init__(self, dim: int, options: CodebookOptions) -> None:
        super().__init__()
        options = check_options(options, "GumbelQuantizer")
        if options.codebook != "gumbel":  # the gumbel settings are checked for codebook='gumbel' only
            raise ValueError(
                f"GumbelQuantizer expects CodebookOptions(codebook='gumbel', ...), got codebook={options.codebook!r}"
            )
        check_integer(dim, "dim", "GumbelQuantizer")
        if dim < 1:
            raise ValueError(f"GumbelQuantizer: dim must be at least 1, got {dim}")
        self.dim = dim
        self.codebook_size = options.codebook_size
        self.options = options
        self.to_logits = nn.Linear(dim, self.codebook_size)
        self.codebook = nn.Parameter(torch.randn(self.codebook_size, dim))
        # Both are set from the first training batch (``_initialize``), as vq's k-means sets its codes.
        self.register_buffer("initialized", torch.tensor(False))

    @property
    def temperature(self) -> float:
        """The temperature at the current ``training_step``."""
        return gumbel_temperature(self.training_step, self.options)

    # ---------------------------------------------------------------------------------------------- public
    @torch.no_grad()
    def codebooks(self) -> Tensor:
        """[1, C, D] the code vectors."""
        return self.codebook[None].clone()

    @torch.no_grad()
    def latent_codebooks(self) -> Tensor:
        """[1, C, D] the code vectors (already in latent space)."""
        return self.codebook[None].clone()

    # ------------------------------------------------------------------ building blocks of the layouts
    def quantize(
        self, z: Tensor, active: Tensor | None = None, loss_input: Tensor | None = None
    ) -> CodebookOutput:
        """Quantize [B, D, F] latents: a Gumbel sample in training, the argmax in eval (see ``Codebook``).

        ``loss_input`` is not needed: the gradient reaches ``z`` through the logits. The reported
        commitment and codebook losses are the mean squared quantization error ||x - q||^2 (detached).
        """
        batch_size, _, num_frames = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            x = self._frames(z)  # [N, D]
            if self.training and not self._is_initialized():
                self._initialize(x.detach())
            logits = self.to_logits(x)  # [N, C]
            weights = None
            if active is not None:
                weights = active[:, None].expand(batch_size, num_frames).reshape(-1).to(x.dtype)  # [N]
            if self.training:
                # Gumbel-max: argmax(logits + g), g ~ Gumbel(0, 1) = -log(Exponential(1)), draws a code with
                # probability softmax(logits); the temperature does not change the draw, only the gradient.
                noise = -torch.empty_like(logits).exponential_().log()
                perturbed = logits + noise
            else:
                perturbed = logits
            codes = perturbed.detach().argmax(dim=1)  # [N]
            q = F.embedding(codes, self.codebook)  # [N, D]; the chosen rows get the codebook's gradient
            if torch.is_grad_enabled():  # (not when encoding or validating: the value is q either way)
                # Straight-through: the value stays exactly q (x - sg(x) is 0), the gradient w.r.t. the logits
                # is that of the soft sample's mix of code vectors (the codebook's own gradient comes from q
                # alone, as for a one-hot sample).
                soft = torch.softmax(perturbed / self.temperature, dim=1)  # [N, C]
                mix = soft @ self.codebook.detach()  # [N, D]
                q = q + (mix - mix.detach())

            error = masked_mean((x.detach() - q.detach()).pow(2).mean(dim=1), weights)
            loss = error.new_zeros(())
            if self.training and self.options.usage_entropy_weight > 0:
                loss = loss + self.options.usage_entropy_weight * usage_kl_to_uniform(logits, weights)
            quantized = q.reshape(batch_size, num_frames, self.dim).transpose(1, 2)  # [B, D, F]
        return CodebookOutput(
            quantized=quantized,
            codes=codes.reshape(batch_size, num_frames),
            loss=loss,
            commitment_loss=error,
            codebook_loss=error,
        )

    @torch.no_grad()
    def lookup(self, z: Tensor) -> Tensor:
        """[B, D, F] latents -> [B, F] int64 codes: the argmax of the logits (deterministic)."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            codes = self.to_logits(self._frames(z)).argmax(dim=1)
        return codes.reshape(z.shape[0], z.shape[2])

    def embed(self, codes: Tensor) -> Tensor:
        """[B, F] int64 codes -> [B, D, F] code vectors."""
        with torch.autocast(device_type=codes.device.type, enabled=False):
            vectors = F.embedding(codes.reshape(-1), self.codebook)  # [B * F, D]
        return vectors.reshape(codes.shape[0], -1, self.dim).transpose(1, 2)

    # ----------------------------------------------------------------------------------------- private
    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        """First training batch: standardise the logits on it (``standardise_outputs``), so that frames rank
        the codes differently from the start, and make each code the mean of the frames whose argmax it is
        (the reconstruction's best vector for them; a random frame for codes no frame picks), so that the code
        vectors start at the latents' scale and a residual stage's residual shrinks.
        """
        standardise_outputs(self.to_logits, x)
        codes = self.to_logits(x).argmax(dim=1)  # [N]
        stats = x.new_zeros(self.codebook_size, 1 + self.dim)  # [C, 1 + D]: count, then sum
        stats.index_add_(0, codes, torch.cat([x.new_ones(x.shape[0], 1), x], dim=1))
        all_reduce_sum(stats)
        counts, sums = stats[:, :1], stats[:, 1:]
        picks = torch.randint(x.shape[0], (self.codebook_size,), device=x.device)
        random_frames = broadcast_from_first(x[picks].contiguous())  # [C, D]
        self.codebook.copy_(torch.where(counts > 0, sums / counts.clamp_min(1.0), random_frames))
        self.initialized.fill_(True)
        self._initialized_seen = True

    def _frames(self, z: Tensor) -> Tensor:
        """[B, D, F] latents -> [B * F, D] rows, in the weights' dtype."""
        return z.transpose(1, 2).reshape(-1, self.dim).to(self.codebook.dtype)
