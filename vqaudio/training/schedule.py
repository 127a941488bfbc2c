"""Learning-rate schedule: linear warm-up, then cosine decay to a floor (Loshchilov & Hutter, 2017, SGDR,
https://arxiv.org/abs/1608.03983; warm-up as in Goyal et al., 2017, https://arxiv.org/abs/1706.02677).

The rate is a pure function of the step, so resuming needs nothing but the step number, and stopping a run
early (``until_step``) and resuming it follows exactly the curve of an uninterrupted run.

::

    lr ^    ____
       |   /    ``--.__                       learning_rate
       |  /            ``--.__
       | /                    ``---.____      min_learning_rate_ratio * learning_rate
       +--------------------------------> step
       0  warmup_steps              max_steps
"""

from __future__ import annotations

import math

from vqaudio.config import TrainConfig


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """The learning rate of optimizer update number ``step`` (0-based).

    Args:
        step: updates done before this one, >= 0.
        config: ``learning_rate``, ``warmup_steps``, ``max_steps``, ``lr_decay``, ``min_learning_rate_ratio``.
    Returns:
        ``learning_rate * (step + 1) / warmup_steps`` during warm-up (never 0, so the first update moves
        the weights); then constant (``lr_decay="none"``) or a half cosine from ``learning_rate`` at the end
        of warm-up to ``min_learning_rate_ratio * learning_rate`` at ``max_steps``, and the floor after.
    """
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    peak = config.learning_rate
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    if config.lr_decay == "none":
        return peak
    floor = peak * config.min_learning_rate_ratio
    decay_steps = max(1, config.max_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))
