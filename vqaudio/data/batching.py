"""Length batching: group utterances of similar length so padding wastes little compute.

The classic bucketing of speech toolkits (e.g. ESPnet's "numel" batch sampler, lhotse's
``DynamicBucketingSampler``), reduced to its deterministic core: sort by length, then fill batches greedily
under two caps, the number of items and the padded size (items x longest item).
"""

from __future__ import annotations

from collections.abc import Sequence

from vqaudio.errors import InputError


def batch_by_length(
    lengths: Sequence[int],
    max_batch_size: int,
    max_batch_samples: int | None = None,
) -> list[list[int]]:
    """Split item indices into batches of similar length, longest batch first.

    Items are sorted by length (longest first, ties by index) and added to the current batch while it holds
    fewer than ``max_batch_size`` items and its padded size ``count * longest`` stays within
    ``max_batch_samples``. An item longer than ``max_batch_samples`` gets a batch of its own. The result
    depends only on the arguments (no randomness), so runs are reproducible.

    Args:
        lengths: [N] non-negative lengths (samples, frames: any unit, the same as ``max_batch_samples``).
        max_batch_size: at most this many items per batch (>= 1).
        max_batch_samples: at most this padded size per batch; None: no limit.
    Returns:
        batches of indices into ``lengths``; every index appears exactly once. Within a batch, indices are
        ordered longest first.
    """
    if max_batch_size < 1:
        raise InputError(f"max_batch_size must be at least 1, got {max_batch_size}")
    if max_batch_samples is not None and max_batch_samples < 1:
        raise InputError(
            f"max_batch_samples must be at least 1 (or None for no limit), got {max_batch_samples}"
        )
    for index, length in enumerate(lengths):
        if isinstance(length, bool) or int(length) != length or length < 0:
            raise InputError(f"lengths[{index}] must be a non-negative integer, got {length!r}")
    order = sorted(range(len(lengths)), key=lambda index: (-int(lengths[index]), index))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        if current:
            # sorted longest first, so the padded size of the grown batch is (count + 1) * longest
            fits_count = len(current) < max_batch_size
            fits_samples = max_batch_samples is None or (len(current) + 1) * longest <= max_batch_samples
            if fits_count and fits_samples:
                current.append(index)
                continue
            batches.append(current)
        current = [index]
        longest = int(lengths[index])
    if current:
        batches.append(current)
    return batches
