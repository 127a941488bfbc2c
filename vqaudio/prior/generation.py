"""Sampling token sequences from the prior, frame by frame and, within a frame, codebook by codebook.

Two paths give the same tokens for the same seed (up to float rounding in the trunk, which flips a draw only
when a uniform number lands within ~1e-6 of a boundary of the cumulative distribution):

* fast: every layer keeps a queue of its past inputs, so one new frame costs one step per layer
  (Paine et al., 2016, "Fast Wavenet Generation Algorithm", https://arxiv.org/abs/1611.09482);
* naive: every new frame reruns the trunk over the last ``receptive_field`` positions.

Every draw is an inverse-CDF lookup of one uniform number from a private ``torch.Generator``, one per
(sequence, frame, codebook) in a fixed order, so both paths consume the random stream identically.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vqaudio.prior.wavenet import WaveNetPrior


def sample_tokens(
    logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator
) -> Tensor:
    """Draw one token per row: logits [B, V] -> [B] int64.

    Args:
        logits: unnormalised log-probabilities.
        temperature: divides the logits; 0 takes the most likely token (and draws nothing).
        top_k: keep only the k most likely tokens (None: all).
        generator: the random stream (one uniform number per row).
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.double() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth_largest = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    cumulative = logits.softmax(dim=-1).cumsum(dim=-1)  # [B, V]
    # drawn on the CPU whatever the device, so a seed gives the same stream everywhere
    uniform = torch.rand(logits.shape[0], 1, generator=generator, dtype=torch.float64).to(logits.device)
    index = torch.searchsorted(cumulative, uniform * cumulative[:, -1:], right=True)[:, 0]
    return index.clamp_(max=logits.shape[-1] - 1)


def sample_frame(
    model: WaveNetPrior,
    features: Tensor,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator,
    previous: Tensor,
) -> Tensor:
    """Codebooks of one frame in order, each given the earlier ones: head features [B, H] -> codes [B, K].

    ``previous`` [B, K]: the previous frame's codes (V where there is none), for heads that read them.
    """
    codes = []
    prefix = torch.zeros_like(features)
    for codebook in range(model.num_codebooks):
        logits = model.codebook_logits(features, prefix, codebook, previous[:, codebook])
        token = sample_tokens(logits, temperature, top_k, generator)
        codes.append(token)
        if codebook < model.num_codebooks - 1:
            prefix = prefix + model.within_frame(token, codebook)
    return torch.stack(codes, dim=1)


@torch.inference_mode()
def generate_codes(
    model: WaveNetPrior,
    prompt: Tensor,
    num_frames: int,
    condition: Tensor | None,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator,
    fast: bool = True,
) -> Tensor:
    """Continue ``prompt`` by ``num_frames`` frames.

    Args:
        model: the network (put it in eval mode first).
        prompt: [B, K, P] int64 codes, P >= 0 (P = 0: unconditional generation).
        num_frames: frames to add.
        condition: [B] condition ids, or None.
        temperature, top_k, generator: see ``sample_tokens``.
        fast: queue-based incremental generation; False reruns the trunk over the receptive field per frame.
    Returns:
        [B, K, P + num_frames] int64: the prompt unchanged, then the new frames.
    """
    B, K, P = prompt.shape
    codes = torch.cat([prompt, prompt.new_zeros(B, K, num_frames)], dim=2)
    cond = model.condition_vector(condition, B)

    def previous_frame(t: int) -> Tensor:
        return codes[:, :, t - 1] if t > 0 else codes.new_full((B, K), model.codebook_size)

    if fast:
        inputs = model.trunk_inputs(prompt)  # [B, C, P + 1]: positions 0 .. P
        state = model.start_generation(inputs[:, :, :P], cond)
        step_input = inputs[:, :, P]
        for t in range(P, P + num_frames):
            features = model.step(step_input, state)
            frame = sample_frame(model, features, temperature, top_k, generator, previous_frame(t))  # [B, K]
            codes[:, :, t] = frame
            step_input = model.embed_frames(frame[:, :, None])[:, :, 0]
        return codes
    field = model.receptive_field
    for t in range(P, P + num_frames):
        first = max(0, t - field + 1)  # trunk positions first .. t feed output t
        if first == 0:
            window = model.trunk_inputs(codes[:, :, :t])
        else:
            window = model.embed_frames(codes[:, :, first - 1 : t])  # position j holds frame j - 1
        features = model.trunk(window, cond)[:, :, -1]
        codes[:, :, t] = sample_frame(model, features, temperature, top_k, generator, previous_frame(t))
    return codes
