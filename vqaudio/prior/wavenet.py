"""The prior network: a WaveNet over token frames with an autoregressive head across codebooks.

WaveNet (van den Oord et al., 2016, https://arxiv.org/abs/1609.03499): stacks of dilated causal convolutions
(dilations doubling per layer, repeated in cycles) with gated ``tanh * sigmoid`` units, residual and skip
connections, and an optional global conditioning vector added in every layer. Here it runs over the frames of
a multi-codebook token sequence ``c[k, t]`` (K codebooks, F frames) instead of audio samples, and models

    p(c) = prod_t prod_k p(c[k, t] | c[:, <t], c[<k, t])

so the likelihood is exact and samples are coherent for residual (coarse to fine) and grouped codebooks alike.

Data flow, with ``e_t = sum_k E_k[c[k, t]]`` the frame embedding and ``s`` a learned start vector::

    trunk input   s    e_0  e_1  e_2 ...        position t holds frame t-1 (shift by one)
    trunk output  h_0  h_1  h_2  h_3 ...        h_t sees frames < t only (causal convs, zero left padding)
    head          logits[k, t] = MLP_k(h_t + sum_{j<k} G_j[c[j, t]] (+ P_k[c[k, t-1]]))

The optional term ``P_k[c[k, t-1]]`` (``previous_code_in_head``) hands each head its own codebook's previous
code unblurred by the sum over codebooks: a learned bigram inside the network (frame 0 sees a "none" code).

Teacher forcing evaluates every (k, t) in one pass; generation draws c[0, t], then c[1, t] given it, ... and
feeds e_t back. ``GenerationState`` holds, per layer, the last ``(kernel_size - 1) * dilation`` inputs in a
circular queue, so one new frame costs one step per layer (fast WaveNet generation, Paine et al., 2016,
https://arxiv.org/abs/1611.09482) instead of a pass over the receptive field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vqaudio.config import PriorConfig
from vqaudio.errors import InputError

HEAD_CHUNK_LOGITS = 1 << 24  # log_prob evaluates the head in frame chunks of at most this many logits (64 MB)


def dilations(config: PriorConfig) -> list[int]:
    """Dilation of every layer, in order: 1, 2, ..., 2**(layers_per_cycle - 1), repeated num_cycles times."""
    return [2**layer for _ in range(config.num_cycles) for layer in range(config.layers_per_cycle)]


def receptive_field(config: PriorConfig) -> int:
    """Past frames that the prediction of a frame can depend on (trunk positions feeding one output)."""
    return 1 + (config.kernel_size - 1) * sum(dilations(config))


def validate_config(config: PriorConfig) -> None:
    """Raise ValueError when the architecture is incomplete (every size's range is checked when a PriorConfig
    is made: vqaudio.config)."""
    if config.num_codebooks is None or config.codebook_size is None:
        raise ValueError(
            "PriorConfig.num_codebooks and codebook_size must be set before building the network "
            f"(got {config.num_codebooks} and {config.codebook_size}); training reads them from the tokens"
        )


class LayerOutput(NamedTuple):
    residual: Tensor  # [B, C, N] (or [B, C] for one step): input to the next layer
    skip: Tensor  # [B, S, N] (or [B, S])


class ResidualLayer(nn.Module):
    """A WaveNet layer: dilated causal conv -> (+ condition) -> tanh * sigmoid -> residual, skip 1x1 convs.

    Args:
        channels: residual width C.
        skip_channels: skip width S.
        kernel_size, dilation: of the causal conv; it reads inputs t, t - d, ..., t - (kernel_size - 1) d.
        condition_dim: size of the global conditioning vector (0: none).
        dropout: on the gated activation.
    """

    def __init__(
        self,
        channels: int,
        skip_channels: int,
        kernel_size: int,
        dilation: int,
        condition_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.history = (kernel_size - 1) * dilation  # past inputs the conv reads: the queue length
        self.dilated = nn.Conv1d(channels, 2 * channels, kernel_size, dilation=dilation)
        self.condition = nn.Linear(condition_dim, 2 * channels, bias=False) if condition_dim else None
        self.residual_out = nn.Conv1d(channels, channels, 1)
        self.skip_out = nn.Conv1d(channels, skip_channels, 1)
        self.dropout = nn.Dropout(dropout)

    def condition_bias(self, condition: Tensor | None) -> Tensor | None:
        """[B, D] conditioning vector -> [B, 2C] added to the dilated conv output (None: unconditioned)."""
        if self.condition is None or condition is None:
            return None
        return self.condition(condition)

    def forward(self, x: Tensor, condition_bias: Tensor | None) -> LayerOutput:
        """[B, C, N] -> residual [B, C, N], skip [B, S, N]; zero left padding keeps it causal."""
        # causal: output n reads inputs n - history .. n; the zeros stand for "before the sequence"
        z = self.dilated(F.pad(x, (self.history, 0)))  # [B, 2C, N]
        if condition_bias is not None:
            z = z + condition_bias[:, :, None]
        return self._gate(x, z)

    def step(self, x: Tensor, queue: Tensor, time: int, condition_bias: Tensor | None) -> LayerOutput:
        """One position: x [B, C] at ``time``; ``queue`` [B, C, history] (past inputs) is updated in place.

        Input at time ``tau`` sits in slot ``tau % history``, so the oldest tap (``time - history``) is in the
        slot this step overwrites.
        """
        taps = [
            queue[:, :, (time - (self.kernel_size - 1 - i) * self.dilation) % self.history]
            for i in range(self.kernel_size - 1)
        ]
        stacked = torch.stack([*taps, x], dim=-1)  # [B, C, kernel_size], oldest first like the conv weight
        weight = self.dilated.weight.reshape(self.dilated.out_channels, -1)  # [2C, C * kernel_size]
        z = F.linear(stacked.reshape(x.shape[0], -1), weight, self.dilated.bias)  # [B, 2C]
        queue[:, :, time % self.history] = x
        if condition_bias is not None:
            z = z + condition_bias
        return self._gate(x, z)

    def _gate(self, x: Tensor, z: Tensor) -> LayerOutput:
        filter_part, gate_part = z.chunk(2, dim=1)
        gated = self.dropout(torch.tanh(filter_part) * torch.sigmoid(gate_part))
        if gated.dim() == 2:  # one step: the 1x1 convs as matrix products
            residual = F.linear(gated, self.residual_out.weight[:, :, 0], self.residual_out.bias)
            skip = F.linear(gated, self.skip_out.weight[:, :, 0], self.skip_out.bias)
        else:
            residual = self.residual_out(gated)
            skip = self.skip_out(gated)
        # sqrt(1/2) keeps the residual stream's variance from growing with depth
        return LayerOutput((x + residual) * math.sqrt(0.5), skip)


@dataclass
class GenerationState:
    """Incremental-generation state: one circular input queue per layer, and the next position."""

    queues: list[Tensor]  # layer l: [B, C, history_l]
    condition_biases: list[Tensor | None]  # layer l: [B, 2C], computed once
    time: int  # trunk position of the next step


class WaveNetPrior(nn.Module):
    """Token sequences [B, K, F] -> next-token logits, exact over frames and, within a frame, over codebooks.

    Args:
        config: the architecture, with ``num_codebooks`` and ``codebook_size`` set.

    Attributes:
        config, num_codebooks (K), codebook_size (V), receptive_field (frames), num_conditions.
    """

    code_offsets: Tensor
    previous_offsets: Tensor

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        validate_config(config)
        assert config.num_codebooks is not None and config.codebook_size is not None
        self.config = config
        self.num_codebooks = K = config.num_codebooks
        self.codebook_size = V = config.codebook_size
        self.num_conditions = config.num_conditions
        self.receptive_field = receptive_field(config)
        C, S, H = config.residual_channels, config.skip_channels, config.head_channels

        # one table for all codebooks; codebook k's codes live at rows k*V .. (k+1)*V - 1
        self.register_buffer("code_offsets", torch.arange(K) * V, persistent=False)
        self.frame_embedding = nn.Embedding(K * V, C)
        self.start = nn.Parameter(torch.zeros(C))
        self.condition_embedding = (
            nn.Embedding(config.num_conditions, config.condition_dim) if (config.num_conditions) else None
        )
        condition_dim = config.condition_dim if config.num_conditions else 0
        self.layers = nn.ModuleList(
            ResidualLayer(C, S, config.kernel_size, dilation, condition_dim, config.dropout)
            for dilation in dilations(config)
        )
        self.skip_to_head = nn.Conv1d(S, H, 1)
        # codes 0..K-2 of the current frame, seen by the heads of the later codebooks
        self.within_frame_embedding = nn.Embedding(max(K - 1, 1) * V, H)
        # code k of the previous frame, seen by head k; codebook k's rows are k*(V+1) .. k*(V+1) + V (none)
        self.previous_code_embedding = nn.Embedding(K * (V + 1), H) if config.previous_code_in_head else None
        self.register_buffer("previous_offsets", torch.arange(K) * (V + 1), persistent=False)
        # per-codebook two-layer MLP heads, stored stacked so one einsum evaluates all K
        self.head_hidden_weight = nn.Parameter(torch.empty(K, H, H))
        self.head_hidden_bias = nn.Parameter(torch.zeros(K, H))
        self.head_out_weight = nn.Parameter(torch.empty(K, H, V))
        self.head_out_bias = nn.Parameter(torch.zeros(K, V))
        self.reset_parameters()

    @property
    def residual_layers(self) -> list[ResidualLayer]:
        return cast(list[ResidualLayer], list(self.layers))

    def reset_parameters(self) -> None:
        K, H = self.num_codebooks, self.config.head_channels
        # a frame input sums K embeddings: scale each so the sum starts at unit variance
        nn.init.normal_(self.frame_embedding.weight, std=1 / math.sqrt(K))
        nn.init.normal_(self.within_frame_embedding.weight, std=1 / math.sqrt(K))
        if self.previous_code_embedding is not None:
            nn.init.normal_(self.previous_code_embedding.weight, std=1 / math.sqrt(K))
        nn.init.normal_(self.start, std=1 / math.sqrt(K))
        nn.init.uniform_(self.head_hidden_weight, -1 / math.sqrt(H), 1 / math.sqrt(H))
        nn.init.uniform_(self.head_out_weight, -1 / math.sqrt(H), 1 / math.sqrt(H))

    # ------------------------------------------------------------------------------------------------
    # Teacher-forced passes (training and likelihood)
    # ------------------------------------------------------------------------------------------------
    def embed_frames(self, codes: Tensor) -> Tensor:
        """[B, K', N] codes -> [B, C, N] frame embeddings (sum over codebooks).

        K' <= K: a sequence of fewer rows holds the first K' codebooks (the coarse stages of a residual
        tokenizer), and its frames embed as the sum of those rows only (``vqaudio.prior.entropy_coding``).
        """
        offsets = self.code_offsets[: codes.shape[1], None]
        return self.frame_embedding(codes + offsets).sum(dim=1).transpose(1, 2)

    def trunk_inputs(self, codes: Tensor) -> Tensor:
        """[B, K, F] -> [B, C, F + 1]: the start vector, then the embeddings of frames 0 .. F-1."""
        start = self.start[None, :, None].expand(codes.shape[0], -1, 1)
        return torch.cat([start, self.embed_frames(codes)], dim=2)

    def condition_vector(self, condition: Tensor | None, batch_size: int) -> Tensor | None:
        """Condition ids [B] -> [B, D]; checks that conditioning is given exactly when the model has it."""
        if self.condition_embedding is None:
            if condition is not None:
                raise InputError("this prior was trained without conditioning; pass condition=None")
            return None
        if condition is None:
            raise InputError(
                f"this prior is conditioned on {self.num_conditions} ids (speakers); pass condition= an id "
                f"in [0, {self.num_conditions}) per sequence"
            )
        if condition.shape != (batch_size,):
            raise InputError(
                f"condition must hold one id per sequence, shape ({batch_size},), "
                f"got {tuple(condition.shape)}"
            )
        if condition.min() < 0 or condition.max() >= self.num_conditions:
            raise InputError(
                f"condition ids must be in [0, {self.num_conditions}), "
                f"got {int(condition.min())}..{int(condition.max())}"
            )
        return self.condition_embedding(condition)

    def trunk(self, inputs: Tensor, condition: Tensor | None) -> Tensor:
        """Trunk positions [B, C, N] -> head features [B, H, N]; output n reads inputs n - field + 1 .. n.

        Args:
            inputs: trunk inputs (see ``trunk_inputs``).
            condition: [B, D] conditioning vector, or None.
        """
        x = inputs
        skips: Tensor | float = 0.0
        for layer in self.residual_layers:
            x, skip = layer(x, layer.condition_bias(condition))
            skips = skips + skip
        assert isinstance(skips, Tensor)
        return F.relu(self.skip_to_head(F.relu(skips * math.sqrt(1 / len(self.layers)))))

    def previous_codes(self, codes: Tensor) -> Tensor:
        """[B, K, F] -> [B, K, F] the codes of each frame's predecessor; V ("none") for frame 0."""
        none = codes.new_full((*codes.shape[:2], 1), self.codebook_size)
        return torch.cat([none, codes[:, :, :-1]], dim=2)

    def head_logits(self, features: Tensor, codes: Tensor, previous: Tensor | None = None) -> Tensor:
        """Head features [B, H, N] and the same frames' codes [B, K, N] -> logits [B, K, N, V].

        The head for codebook k adds the within-frame embeddings of codes 0 .. k-1 (an exclusive cumulative
        sum), so logits[:, k] never depend on codes[:, k:] of the same frame. With ``previous_code_in_head``
        it also adds the embedding of ``previous[:, k]`` [B, K, N], the codes of the frames before
        (None: ``previous_codes(codes)``, right when ``codes`` starts at frame 0).
        """
        B, K, N = codes.shape
        context = features.transpose(1, 2)[:, None].expand(B, K, N, -1)  # [B, K, N, H]
        if self.previous_code_embedding is not None:
            previous = self.previous_codes(codes) if previous is None else previous
            context = context + self.previous_code_embedding(previous + self.previous_offsets[:, None])
        if K > 1:
            offsets = self.code_offsets[: K - 1, None]
            within = self.within_frame_embedding(codes[:, : K - 1] + offsets)  # [B, K-1, N, H]
            prefix = torch.cat([torch.zeros_like(within[:, :1]), within.cumsum(dim=1)], dim=1)  # [B, K, N, H]
            context = context + prefix
        hidden = F.relu(
            torch.einsum("bknh,khg->bkng", context, self.head_hidden_weight) + self.head_hidden_bias[:, None]
        )
        return torch.einsum("bkng,kgv->bknv", hidden, self.head_out_weight) + self.head_out_bias[:, None]

    def forward(self, codes: Tensor, condition: Tensor | None = None) -> Tensor:
        """Teacher-forced logits.

        Args:
            codes: [B, K, F] int64 in [0, V).
            condition: [B] int64 condition ids, or None for an unconditioned prior.
        Returns:
            [B, K, F, V] logits; logits[:, k, t] depend on codes[:, :, <t] and codes[:, <k, t] only.
        """
        cond = self.condition_vector(condition, codes.shape[0])
        features = self.trunk(self.trunk_inputs(codes)[:, :, :-1], cond)  # [B, H, F]
        return self.head_logits(features, codes)

    def log_prob(self, codes: Tensor, condition: Tensor | None = None) -> Tensor:
        """Natural-log probability of every token: codes [B, K, F] -> [B, K, F].

        The head runs a chunk of frames at a time (``HEAD_CHUNK_LOGITS``), so long sequences and large
        batches never hold all [B, K, F, V] logits at once.
        """
        cond = self.condition_vector(condition, codes.shape[0])
        features = self.trunk(self.trunk_inputs(codes)[:, :, :-1], cond)  # [B, H, F]
        B, K, _ = codes.shape
        previous = self.previous_codes(codes)
        chunk_frames = max(1, HEAD_CHUNK_LOGITS // (B * K * self.codebook_size))
        pieces = []
        for start in range(0, codes.shape[2], chunk_frames):
            frames = slice(start, start + chunk_frames)
            chunk = codes[:, :, frames]
            logits = self.head_logits(features[:, :, frames], chunk, previous[:, :, frames])
            pieces.append(logits.log_softmax(dim=-1).gather(-1, chunk[..., None])[..., 0])
        return torch.cat(pieces, dim=2)

    # ------------------------------------------------------------------------------------------------
    # Incremental generation
    # ------------------------------------------------------------------------------------------------
    def start_generation(self, history: Tensor, condition: Tensor | None) -> GenerationState:
        """Fill every layer's queue from a teacher-forced pass over ``history``.

        Args:
            history: [B, C, N] trunk inputs of positions 0 .. N-1 (N may be 0).
            condition: [B, D] conditioning vector, or None.
        Returns:
            the state whose next ``step`` is position N.
        """
        B, C, N = history.shape
        queues, biases = [], []
        x = history
        for layer in self.residual_layers:
            bias = layer.condition_bias(condition)
            queue = history.new_zeros(B, C, layer.history)
            keep = min(N, layer.history)
            if keep:
                # input at position tau lives in slot tau % history
                slots = torch.arange(N - keep, N, device=history.device) % layer.history
                queue[:, :, slots] = x[:, :, N - keep :]
                x = layer(x, bias).residual
            queues.append(queue)
            biases.append(bias)
        return GenerationState(queues, biases, N)

    def step(self, inputs: Tensor, state: GenerationState) -> Tensor:
        """One trunk position: inputs [B, C] (embedding of the previous frame) -> head features [B, H].

        Updates ``state`` in place (queues and time).
        """
        x = inputs
        skips: Tensor | float = 0.0
        for layer, queue, bias in zip(
            self.residual_layers, state.queues, state.condition_biases, strict=True
        ):
            x, skip = layer.step(x, queue, state.time, bias)
            skips = skips + skip
        state.time += 1
        assert isinstance(skips, Tensor)
        hidden = F.relu(skips * math.sqrt(1 / len(self.layers)))
        return F.relu(F.linear(hidden, self.skip_to_head.weight[:, :, 0], self.skip_to_head.bias))

    def codebook_logits(
        self, features: Tensor, prefix: Tensor, codebook: int, previous: Tensor | None = None
    ) -> Tensor:
        """Logits [B, V] of one codebook from head features [B, H], the within-frame prefix [B, H] and, with
        ``previous_code_in_head``, this codebook's code in the previous frame [B] (V: none)."""
        context = features + prefix
        if self.previous_code_embedding is not None:
            if previous is None:
                raise ValueError("this prior's heads read the previous frame's codes; pass previous=")
            context = context + self.previous_code_embedding(previous + int(self.previous_offsets[codebook]))
        hidden = F.relu(context @ self.head_hidden_weight[codebook] + self.head_hidden_bias[codebook])
        return hidden @ self.head_out_weight[codebook] + self.head_out_bias[codebook]

    def within_frame(self, codes: Tensor, codebook: int) -> Tensor:
        """[B] codes of ``codebook`` -> [B, H] within-frame embeddings (for the later codebooks' heads)."""
        return self.within_frame_embedding(codes + codebook * self.codebook_size)
