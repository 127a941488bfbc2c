"""Token frames <-> bits: a range coder (``constriction``) driven by the token prior, or by adaptive counts.

Both coders work block by block (``vqaudio.io.bitstream``): a block's tokens are coded knowing nothing of the
other blocks, so a damaged block never keeps the others from decoding (``--conceal`` then fills it). Within a
block the tokens go frame by frame, and within a frame row by row (the pitch row first, then codebooks 1, 2,
...), each with the probabilities of

    PriorCoder      the WaveNet prior, p(code | the block's earlier frames, the frame's earlier rows), run one
                    frame at a time with fast generation's queues (``WaveNetPrior.step``). A file with fewer
                    codebooks than the prior models embeds each frame as the sum of the rows it has (the coarse
                    stages of the residual tokenizer): measured better than filling the missing rows with the
                    prior's most likely codes, and cheaper (docs/EXPERIMENTS.md, 2026-12-07);
    adaptive        one frequency table per row, flat at the start of each block, adding ``increment`` to a
                    code's count each time it is coded (16 for the pitch row, whose values repeat; 1 for the
                    codebooks, whose 1024 codes hardly do): no model, fast.

The range coder is constriction's ``queue.RangeEncoder`` (32-bit words, 24-bit fixed-point probabilities), each
token coded with a ``Categorical(probabilities, perfect=False)``, which quantizes float64 probabilities to
integer frequencies deterministically (every code keeps at least one unit, so any code can be coded).

Determinism. The decoder must compute bit for bit the probabilities the encoder used. Rounding the logits to a
coarse grid does not give that: with ~10^5 logits per second, some logit of a computation that differs by one
float rounding always lies next to a grid boundary. What does: the decoder runs exactly the encoder's
computation. Both run the prior on the CPU, one thread (forced here, whatever the caller set), one frame at a
time, with a batch of always ``lanes`` blocks (the header records it: 8, fewer for a file of fewer blocks; block
i in lane i mod lanes; idle lanes hold code 0), so every tensor op sees the same shapes and the same values in
the same place; the rows of a batch do not mix, so a damaged block's lane holding other codes leaves the other
lanes' numbers unchanged. The probabilities are
then a float64 softmax of the float32 logits, quantized by constriction. That holds for one torch build on one
CPU architecture; another build may round differently, and then the block's codes check fails with an error
(``vqaudio.io.bitstream``), never silently.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from vqaudio.errors import InputError
from vqaudio.optional import require
from vqaudio.prior.generation import sample_tokens
from vqaudio.prior.prior import Prior

constriction = require("constriction", "compress", "compressing tokens (vqaudio compress)")

LANES = 8  # blocks coded side by side by the prior coder (the batch of every step): at most 8 per file
PITCH_INCREMENT = 16  # the adaptive coder's count increment for a pitch row ...
CODE_INCREMENT = 1  # ... and for a codebook

_CODING = threading.Lock()  # one coding at a time per process: torch's thread count is process-wide


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with torch on one CPU thread (and no other coding in this process), then restore the
    caller's thread count: the prior's numbers must not depend on how many threads split a product."""
    with _CODING:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def _categorical(probabilities: np.ndarray) -> Any:
    return constriction.stream.model.Categorical(probabilities, perfect=False)


def _words(encoder: Any) -> bytes:
    return np.asarray(encoder.get_compressed(), dtype="<u4").tobytes()


def _decoder(payload: bytes) -> Any:
    return constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))


def check_codes(codes: np.ndarray, alphabets: Sequence[int], what: str = "codes") -> None:
    """Raise InputError unless every row r of ``codes`` [rows, frames] holds codes in [0, alphabets[r])."""
    if codes.shape[0] != len(alphabets):
        raise InputError(f"{what} have {codes.shape[0]} rows, expected {len(alphabets)}")
    for row, alphabet in enumerate(alphabets):
        values = codes[row]
        if values.size and (values.min() < 0 or values.max() >= alphabet):
            raise InputError(
                f"{what}: row {row} holds codes {int(values.min())}..{int(values.max())}, outside "
                f"[0, {alphabet}); were they made by another tokenizer?"
            )


# --------------------------------------------------------------------------------------------------
# Adaptive frequencies (no model)
# --------------------------------------------------------------------------------------------------
def adaptive_increments(pitch_rows: int, rows: int) -> list[int]:
    """The count increment of each row: ``PITCH_INCREMENT`` for the pitch row, ``CODE_INCREMENT`` else."""
    return [PITCH_INCREMENT] * pitch_rows + [CODE_INCREMENT] * (rows - pitch_rows)


def encode_adaptive(block: np.ndarray, alphabets: Sequence[int], increments: Sequence[int]) -> bytes:
    """One block [rows, frames] -> payload bytes, under per-row counts that start at 1 for every code."""
    counts = [np.ones(alphabet) for alphabet in alphabets]
    encoder = constriction.stream.queue.RangeEncoder()
    for frame in np.asarray(block, dtype=np.int64).T:
        for row, code in enumerate(frame.tolist()):
            encoder.encode(code, _categorical(counts[row]))
            counts[row][code] += increments[row]
    return _words(encoder)


def decode_adaptive(
    payload: bytes, alphabets: Sequence[int], increments: Sequence[int], frames: int
) -> np.ndarray:
    """``encode_adaptive``'s payload -> the block [rows, frames] (int64)."""
    counts = [np.ones(alphabet) for alphabet in alphabets]
    decoder = _decoder(payload)
    block = np.zeros((len(alphabets), frames), dtype=np.int64)
    for frame in range(frames):
        for row in range(len(alphabets)):
            code = int(decoder.decode(_categorical(counts[row])))
            block[row, frame] = code
            counts[row][code] += increments[row]
    return block


# --------------------------------------------------------------------------------------------------
# The prior
# --------------------------------------------------------------------------------------------------
Choose = Callable[[int, int, int, np.ndarray], int]  # (lane, frame, row, probabilities) -> the code


class PriorCoder:
    """Codes blocks of token frames under a prior, ``lanes`` blocks at a time.

    Args:
        prior: an unconditioned prior of the tokenizer that made the codes.
        alphabets: codes each row may hold (the pitch row's levels, then the codebook size per codebook);
            at most the prior's codebooks, in its order.
        lanes: the batch of every step (the file's header records it; a decoder uses the file's).
    """

    def __init__(self, prior: Prior, alphabets: Sequence[int], lanes: int = LANES) -> None:
        model = prior.model
        if model.num_conditions:
            raise InputError(
                "this prior is conditioned on speakers; compression needs an unconditioned prior (pass "
                "prior=False for the adaptive coder)"
            )
        if not 1 <= len(alphabets) <= model.num_codebooks:
            raise InputError(
                f"the codes have {len(alphabets)} rows but the prior models {model.num_codebooks}; lower "
                "n_q, or code without the prior"
            )
        if max(alphabets) > model.codebook_size:
            raise InputError(
                f"the codes hold up to {max(alphabets)} values per row, the prior {model.codebook_size}"
            )
        self.model = model
        self.alphabets = list(alphabets)
        self.lanes = lanes

    def encode(self, blocks: Sequence[np.ndarray]) -> list[bytes]:
        """Blocks [rows, frames_i] -> one payload each."""
        payloads: list[bytes] = []
        with one_thread():
            for first in range(0, len(blocks), self.lanes):
                group = [np.asarray(block, dtype=np.int64) for block in blocks[first : first + self.lanes]]
                encoders = [constriction.stream.queue.RangeEncoder() for _ in group]

                def encode(
                    lane: int,
                    frame: int,
                    row: int,
                    probabilities: np.ndarray,
                    group: list[np.ndarray] = group,
                    encoders: list[Any] = encoders,
                ) -> int:
                    code = int(group[lane][row, frame])
                    encoders[lane].encode(code, _categorical(probabilities))
                    return code

                self._run([block.shape[1] for block in group], encode)
                payloads += [_words(encoder) for encoder in encoders]
        return payloads

    def decode(self, payloads: Sequence[bytes | None], frames: Sequence[int]) -> list[np.ndarray | None]:
        """Payloads (None: a damaged block, skipped) and each block's frame count -> blocks [rows, frames_i]
        (None where the payload is None or did not decode)."""
        blocks: list[np.ndarray | None] = []
        with one_thread():
            for first in range(0, len(payloads), self.lanes):
                group = list(payloads[first : first + self.lanes])
                lengths = [
                    n if payload is not None else 0
                    for n, payload in zip(frames[first : first + len(group)], group, strict=True)
                ]
                decoders = [None if payload is None else _decoder(payload) for payload in group]
                out = [np.zeros((len(self.alphabets), n), dtype=np.int64) for n in lengths]
                failed: set[int] = set()

                def decode(
                    lane: int,
                    frame: int,
                    row: int,
                    probabilities: np.ndarray,
                    decoders: list[Any] = decoders,
                    out: list[np.ndarray] = out,
                    failed: set[int] = failed,
                ) -> int:
                    decoder = decoders[lane]
                    if decoder is None or lane in failed:
                        return 0
                    try:
                        code = int(decoder.decode(_categorical(probabilities)))
                    except (ValueError, RuntimeError, OverflowError):  # words run out: not what was coded
                        failed.add(lane)
                        return 0
                    out[lane][row, frame] = code
                    return code

                self._run(lengths, decode)
                blocks += [
                    None if payload is None or lane in failed else out[lane]
                    for lane, payload in enumerate(group)
                ]
        return blocks

    @torch.inference_mode()
    def _run(self, lengths: Sequence[int], choose: Choose) -> None:
        """Step every lane through its block's frames; ``choose`` gives (or takes) each token.

        Always ``self.lanes`` lanes (those past ``lengths``, and frames past a lane's length, hold code 0), so
        the encoder and decoder run the same ops on the same shapes whatever the blocks.
        """
        model, lanes, rows = self.model, self.lanes, len(self.alphabets)
        start = model.start.detach()
        state = model.start_generation(start.new_zeros(lanes, start.shape[0], 0), None)
        step_input = start[None].expand(
            lanes, -1
        )  # position 0: the start vector, as for frame 0 of a sequence
        previous = torch.full((lanes, rows), model.codebook_size, dtype=torch.long)  # "none" before frame 0
        lengths = list(lengths) + [0] * (lanes - len(lengths))
        frame_codes = np.zeros((lanes, rows), dtype=np.int64)
        for frame in range(max(lengths, default=0)):
            features = model.step(step_input, state)  # [lanes, H]
            prefix = torch.zeros_like(features)
            frame_codes[:] = 0
            for row, alphabet in enumerate(self.alphabets):
                logits = model.codebook_logits(features, prefix, row, previous[:, row])  # [lanes, V]
                probabilities = torch.softmax(logits[:, :alphabet].double(), dim=-1).numpy()
                for lane in range(lanes):
                    if frame < lengths[lane]:
                        frame_codes[lane, row] = choose(lane, frame, row, probabilities[lane])
                if row < rows - 1:
                    prefix = prefix + model.within_frame(torch.from_numpy(frame_codes[:, row].copy()), row)
            current = torch.from_numpy(frame_codes.copy())  # [lanes, rows]
            step_input = model.embed_frames(current[:, :, None])[:, :, 0]
            previous = current


@torch.inference_mode()
def continue_frames(
    prior: Prior,
    alphabets: Sequence[int],
    history: np.ndarray,
    frames: int,
    temperature: float,
    seed: int,
) -> np.ndarray:
    """The prior's continuation of ``history`` [rows, P] by ``frames`` frames -> [rows, frames] (concealment).

    The same model of a file's rows as ``PriorCoder`` (the rows it has, pitch levels only for the pitch row),
    with the last receptive field of frames as the context; ``temperature`` 0 takes the most likely code.
    """
    model = prior.model
    rows = len(alphabets)
    context = torch.as_tensor(np.asarray(history)[:, -model.receptive_field :], dtype=torch.long)[None]
    length = context.shape[2]
    with one_thread():
        inputs = model.trunk_inputs(context)  # [1, C, P + 1]
        state = model.start_generation(inputs[:, :, :length], None)
        step_input = inputs[:, :, length]
        previous = context[:, :, -1] if length else torch.full((1, rows), model.codebook_size)
        generator = torch.Generator().manual_seed(seed)
        out = torch.zeros(1, rows, frames, dtype=torch.long)
        for frame in range(frames):
            features = model.step(step_input, state)
            prefix = torch.zeros_like(features)
            for row, alphabet in enumerate(alphabets):
                logits = model.codebook_logits(features, prefix, row, previous[:, row])[:, :alphabet]
                out[:, row, frame] = sample_tokens(logits, temperature, None, generator)
                if row < rows - 1:
                    prefix = prefix + model.within_frame(out[:, row, frame], row)
            previous = out[:, :, frame]
            step_input = model.embed_frames(out[:, :, frame : frame + 1])[:, :, 0]
    return out[0].numpy()
