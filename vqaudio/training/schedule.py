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

from vqaudio.config import PriorTrainConfig, TrainConfig


def learning_rate_at(step: int, config: TrainConfig | PriorTrainConfig) -> float:
    """``scheduled_learning_rate`` with the settings of a training config (``learning_rate``,
    ``warmup_steps``, ``max_steps``, ``lr_decay``, ``min_learning_rate_ratio``)."""
    return scheduled_learning_rate(
        step,
        config.learning_rate,
        warmup_steps=config.warmup_steps,
        max_steps=config.max_steps,
        decay=config.lr_decay,
        min_ratio=config.min_learning_rate_ratio,
    )


def scheduled_learning_rate(
    step: int,
    peak: float,
    *,
    warmup_steps: int,
    max_steps: int,
    decay: str = "cosine",
    min_ratio: float = 0.0,
) -> float:
    """The learning rate of optimizer update number ``step`` (0-based).

    Args:
        step: updates done before this one, >= 0.
        peak: the rate at the end of warm-up.
        warmup_steps: updates of linear warm-up.
        max_steps: where the cosine reaches its floor.
        decay: ``"cosine"``, or ``"none"`` for a constant rate after warm-up.
        min_ratio: the floor, as a fraction of ``peak``.
    Returns:
        ``peak * (step + 1) / warmup_steps`` during warm-up (never 0, so the first update moves the weights);
        then constant (``decay="none"``) or a half cosine from ``peak`` at the end of warm-up to
        ``min_ratio * peak`` at ``max_steps``, and the floor after.
    """
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if decay == "none":
        return peak
    floor = peak * min_ratio
    decay_steps = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))
