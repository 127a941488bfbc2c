"""Exact windowed application of a frame-local network: long inputs in bounded memory, batches of any lengths.

Long inputs are processed in windows so memory stays bounded, and the windows overlap by the model's
receptive field so that the result equals processing the whole input at once (the SoundStream/EnCodec
networks are convolutional: a frame depends only on ``receptive_field`` samples either side)::

    frames   0                                                                     F
    window 1 |<-------- core C -------->|<---- 2R ---->|
    window 2                    |<- R ->|<-------- core C -------->|<- R ->|
    last                                        |<--- R + shift --->|<--- core --->|   (shifted to end at F)

Every window has the same length (C + 2R frames), so windows of different files batch without padding; only
the core of each window is kept (exact cropping, no crossfade). A batch of short inputs of unequal lengths is
zero-padded to the longest, which changes the last R frames of the shorter ones (in the single-file run the
network pads every layer with zeros, in the batch those positions hold real activations); those frames are
recomputed from a tail window that ends exactly at the input's end. So tokens never depend on batching or
chunking, up to float rounding (a latent almost equidistant from two codes may pick either).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from vqaudio.data.batching import batch_by_length


class Window(NamedTuple):
    """A window of one item: frames [start, start + frames) in, frames [keep_start, keep_stop) kept."""

    item: int
    start: int
    frames: int
    keep_start: int
    keep_stop: int


# --------------------------------------------------------------------------------------------------
def frame_map(
    inputs: list[Tensor],
    num_frames: list[int],
    step: Callable[[Tensor], Tensor],
    in_unit: int,
    out_unit: int,
    context: int,
    core: int,
) -> list[Tensor]:
    """Apply ``step`` to each input as if alone, batching inputs and cutting long ones into windows.

    Args:
        inputs: N tensors [..., L_i] (equal leading shapes), L_i <= num_frames[i] * in_unit; each is
            zero-padded to whole frames (as the model itself pads), window by window, never copied whole.
        num_frames: [N] frames of each input.
        step: batch [B, ..., P * in_unit] -> [B, ..., P * out_unit]; output frame f may depend on input
            frames within ``context`` of f, and the network zero-pads at the ends of its input.
        in_unit, out_unit: input / output positions per frame (samples: hop_length; codes: 1).
        context: frames of context each side that make a window's kept frames exact.
        core: frames kept per window of a long input; windows have ``core + 2 * context`` frames, and a
            forward pass holds at most one window's worth of frames (B x frames), which bounds memory.
            With 30 s windows the default model needs about 0.4 GB of activations on the CPU.
    Returns:
        N tensors [..., num_frames[i] * out_unit].
    """
    window = core + 2 * context
    budget = window
    outputs: list[Tensor | None] = [None] * len(inputs)

    def window_input(item: int, start: int, frames: int) -> Tensor:
        """Input frames [start, start + frames) of ``item``, zero-padded past its end."""
        piece = inputs[item][..., start * in_unit : (start + frames) * in_unit]
        return F.pad(piece, (0, frames * in_unit - piece.shape[-1]))

    def store(item: int, first: int, last: int, values: Tensor) -> None:
        output = outputs[item]
        if output is None:
            shape = (*values.shape[:-1], num_frames[item] * out_unit)
            output = outputs[item] = torch.empty(shape, dtype=values.dtype, device=values.device)
        output[..., first * out_unit : last * out_unit] = values

    def run_windows(windows: list[Window]) -> None:
        """Windows of equal length batch without padding, so no window is affected by another."""
        by_length: dict[int, list[Window]] = defaultdict(list)
        for item_window in windows:
            by_length[item_window.frames].append(item_window)
        for frames, group in sorted(by_length.items()):
            per_batch = max(1, budget // frames)
            for first in range(0, len(group), per_batch):
                chunk = group[first : first + per_batch]
                batch = torch.stack([window_input(w.item, w.start, w.frames) for w in chunk])
                result = step(batch)  # [B, ..., frames * out_unit]
                for row, w in enumerate(chunk):
                    kept = result[
                        row, ..., (w.keep_start - w.start) * out_unit : (w.keep_stop - w.start) * out_unit
                    ]
                    store(w.item, w.keep_start, w.keep_stop, kept)

    windows_of_long_items: list[Window] = []
    short_items: list[int] = []
    for item, frames in enumerate(num_frames):
        if frames > window:
            windows_of_long_items.extend(long_windows(item, frames, core, context))
        else:
            short_items.append(item)
    run_windows(windows_of_long_items)

    tails: list[Window] = []
    short_lengths = [num_frames[item] for item in short_items]
    for batch_indices in batch_by_length(short_lengths, max(1, len(short_items)), budget):
        items = [short_items[index] for index in batch_indices]
        longest = max(num_frames[item] for item in items)
        batch = torch.stack([window_input(item, 0, longest) for item in items])  # [B, ..., longest * in_unit]
        result = step(batch)
        for row, item in enumerate(items):
            frames = num_frames[item]
            # padding changed the last `context` frames of a shorter item: keep the rest, redo those
            kept = frames if frames == longest else max(0, frames - context)
            if kept:
                store(item, 0, kept, result[row, ..., : kept * out_unit])
            if kept < frames:
                start = max(0, frames - 2 * context)
                tails.append(Window(item, start, frames - start, kept, frames))
    run_windows(tails)
    missing = [item for item, output in enumerate(outputs) if output is None]
    if missing:  # every frame is kept by exactly one window, so this is a bug, not a user error
        raise RuntimeError(f"frame_map left items {missing} without output")
    return [output for output in outputs if output is not None]


def long_windows(item: int, num_frames: int, core: int, context: int) -> list[Window]:
    """Windows of exactly ``core + 2 * context`` frames whose kept cores tile ``[0, num_frames)``.

    A kept frame has at least ``context`` frames of input on each side, or the input's true edge.
    """
    window = core + 2 * context
    windows = []
    for keep_start in range(0, num_frames, core):
        keep_stop = min(keep_start + core, num_frames)
        start = min(max(0, keep_start - context), num_frames - window)
        windows.append(Window(item, start, window, keep_start, keep_stop))
    return windows


def stream_windows(
    pieces: Iterable[Tensor],
    num_frames: int,
    step: Callable[[Tensor], Tensor],
    in_unit: int,
    out_unit: int,
    context: int,
    core: int,
) -> Iterator[Tensor]:
    """``frame_map`` of one input that arrives in consecutive pieces, its output yielded as it is made.

    The windows are ``frame_map``'s for an input of ``num_frames`` frames alone (one pass when it is no longer
    than a window), so the output pieces, concatenated, equal ``frame_map([input], ...)[0]``. Only the input
    from the current window's start to the end of the last piece read is held: a window and a piece.

    Args:
        pieces: [..., n_i] tensors whose concatenation is the input [..., L], L <= num_frames * in_unit.
        num_frames, step, in_unit, out_unit, context, core: as for ``frame_map``.
    Returns:
        an iterator of [..., m_j * out_unit] outputs of consecutive frames, num_frames * out_unit in all.
    """
    source = iter(pieces)
    held: list[Tensor] = []  # input from position `offset` on
    offset = 0
    held_length = 0

    def window_input(start: int, frames: int) -> Tensor:
        """Input frames [start, start + frames), zero-padded past its end; forgets the input before them."""
        nonlocal offset, held_length
        first, stop = start * in_unit, (start + frames) * in_unit
        while offset + held_length < stop:
            piece = next(source, None)
            if piece is None:
                break
            held.append(piece)
            held_length += piece.shape[-1]
        joined = torch.cat(held, dim=-1)[..., first - offset :]
        held[:], offset, held_length = [joined], first, joined.shape[-1]
        piece = joined[..., : stop - first]
        return F.pad(piece, (0, stop - first - piece.shape[-1]))

    window = core + 2 * context
    if num_frames <= window:
        yield step(window_input(0, num_frames)[None])[0]
        return
    for item_window in long_windows(0, num_frames, core, context):
        result = step(window_input(item_window.start, item_window.frames)[None])[0]
        first = (item_window.keep_start - item_window.start) * out_unit
        yield result[..., first : (item_window.keep_stop - item_window.start) * out_unit]
