"""Validation during training: whole held-out utterances through the model in eval mode.

Reports the training loss terms (``vqaudio.codec.losses.ReconstructionLoss``), the quantizer's loss, the
``mel_distance`` that ``vqaudio eval`` reports, and codebook usage and perplexity per codebook
(vqaudio.evaluation.codebook_stats). Utterances are batched by length (vqaudio.data.batching) and zero-padded
within a batch; each one's metrics are computed on its own samples only, then averaged over utterances
(each utterance counts once, whatever its length). Under DDP every rank validates a share of the batches and
the sums are all-reduced, so all ranks get the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from vqaudio.codec.losses import ReconstructionLoss, mel_distance
from vqaudio.codec.vqvae import VQVAE
from vqaudio.data.batching import batch_by_length
from vqaudio.data.crops import model_rate_length
from vqaudio.data.utterance import Utterance
from vqaudio.errors import AudioError
from vqaudio.evaluation.codebook_stats import CodebookUsage
from vqaudio.io.audio import load_audio
from vqaudio.training.distributed import SINGLE_PROCESS, DistributedContext, all_reduce_sum

log = logging.getLogger(__name__)

# Validation batches hold up to this many times the samples of a training batch: no gradients are kept.
VALIDATION_BATCH_FACTOR = 4
LOSS_TERMS = ("loss", "waveform_l1", "stft", "mel", "envelope", "quantizer", "mel_distance")


def hold_out(
    utterances: Sequence[Utterance], count: int, seed: int
) -> tuple[list[Utterance], list[Utterance]]:
    """Split ``count`` utterances off a corpus for validation, the same ones for the same seed.

    Args:
        utterances: the corpus (sorted by id, as ``load_corpus`` returns it).
        count: files to hold out; at most half the corpus is held out, and none from a single file.
        seed: picks which files (a seeded permutation of the corpus order).
    Returns:
        (training utterances, validation utterances), each in corpus order.
    """
    count = max(0, min(count, len(utterances) // 2))
    chosen = set(np.random.default_rng(seed).permutation(len(utterances))[:count].tolist())
    train = [utt for index, utt in enumerate(utterances) if index not in chosen]
    valid = [utt for index, utt in enumerate(utterances) if index in chosen]
    return train, valid


class ValidationSet:
    """Whole utterances, batched by length; each process decodes (once, into memory) only its share.

    Args:
        utterances: the validation corpus.
        sample_rate: the model's rate (files are resampled to it).
        max_batch_size: utterances per batch.
        max_batch_samples: padded samples per batch (a longer utterance gets a batch of its own).
        skip_bad: leave out files that fail to decode (with a warning each) instead of raising AudioError.
        context: under DDP, rank r of W keeps every W-th batch from the r-th (``own_batches``) and decodes
            only those; batches are planned from the header lengths when every utterance has them, so a large
            validation set is never decoded whole by every rank.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        sample_rate: int,
        max_batch_size: int,
        max_batch_samples: int,
        skip_bad: bool = False,
        context: DistributedContext = SINGLE_PROCESS,
    ) -> None:
        self.sample_rate = sample_rate
        self.utterances = list(utterances)
        self.audio: dict[int, Tensor] = {}
        if all(utt.num_samples is not None and utt.sample_rate for utt in self.utterances):
            lengths = [model_rate_length(utt, sample_rate) for utt in self.utterances]
        else:  # no header lengths to plan with: decode everything first
            self.utterances = [utt for utt in self.utterances if self._decode(utt, len(self.audio), skip_bad)]
            lengths = [len(self.audio[index]) for index in range(len(self.utterances))]
        self.batches = batch_by_length(lengths, max_batch_size, max_batch_samples)
        self._seconds = sum(lengths) / sample_rate
        own = self.batches[context.rank :: context.world_size]
        for index in sorted(index for batch in own for index in batch):
            if index not in self.audio:
                self._decode(self.utterances[index], index, skip_bad)
        self.own_batches = [[index for index in batch if index in self.audio] for batch in own]
        self.own_batches = [batch for batch in self.own_batches if batch]
        # Every rank must agree on len() (it decides whether all of them validate, and validation
        # all-reduces), so only a single process subtracts the files it could not decode.
        planned = sum(len(batch) for batch in own)
        self._num_bad = planned - sum(map(len, self.own_batches)) if context.world_size == 1 else 0

    def _decode(self, utterance: Utterance, index: int, skip_bad: bool) -> bool:
        """Decode ``utterance`` into ``self.audio[index]``; False when it failed and ``skip_bad``."""
        try:
            self.audio[index] = load_audio(utterance.path, self.sample_rate)
        except AudioError as error:
            if not skip_bad:
                raise
            log.warning("skipping validation file %s (--skip-bad)", error.reason)
            return False
        return True

    def __len__(self) -> int:
        """Utterances validated (across all processes; a single process leaves out the undecodable ones)."""
        return len(self.utterances) - self._num_bad

    @property
    def seconds(self) -> float:
        """Duration of the whole validation set (all processes) at the model rate."""
        return self._seconds

    def batch(self, indices: Sequence[int]) -> tuple[Tensor, list[int]]:
        """The utterances ``indices`` (decoded by this process) zero-padded into [B, longest], and their lengths."""
        lengths = [len(self.audio[index]) for index in indices]
        wav = torch.zeros(len(indices), max(lengths))
        for row, index in enumerate(indices):
            wav[row, : lengths[row]] = self.audio[index]
        return wav, lengths


class ValidationExample(NamedTuple):
    """One validation utterance and its reconstruction, [T] each (for TensorBoard)."""

    utterance_id: str
    reference: Tensor
    reconstruction: Tensor


class ValidationResult(NamedTuple):
    """metrics: loss terms and mel_distance (floats), commitment / codebook_usage / perplexity (lists, one
    value per codebook), num_utterances and seconds. examples: a few utterances of this rank's first batch."""

    metrics: dict[str, float | list[float]]
    examples: list[ValidationExample]


@torch.no_grad()
def validate(
    model: VQVAE,
    validation_set: ValidationSet,
    loss: ReconstructionLoss,
    quantizer_weight: float,
    context: DistributedContext = SINGLE_PROCESS,
    num_examples: int = 2,
) -> ValidationResult:
    """Run the validation set through ``model`` (put in eval mode, and back in its former mode after).

    Args:
        model: the unwrapped model (not the DDP wrapper: eval needs no gradient synchronisation).
        validation_set: see ``ValidationSet``.
        loss: the training's reconstruction loss.
        quantizer_weight: ``LossConfig.quantizer_weight``, as in training.
        context: under DDP each rank runs its share (``validation_set.own_batches``, built for the same
            context) and the sums are all-reduced.
        num_examples: utterances returned for listening (from this rank's first batch).
    Returns:
        ValidationResult.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    num_codebooks = model.num_codebooks
    sums = torch.zeros(len(LOSS_TERMS) + num_codebooks + 1, dtype=torch.float64)  # terms, commitment, count
    usage = CodebookUsage(num_codebooks, model.codebook_size)
    examples: list[ValidationExample] = []
    try:
        for indices in validation_set.own_batches:
            wav, lengths = validation_set.batch(indices)
            wav = wav.to(device)
            output = model(wav)
            commitment = output.quantizer.commitment_loss.detach().double().cpu()  # [K] batch means
            quantizer_loss = quantizer_weight * float(output.quantizer.loss)
            for row, length in enumerate(lengths):
                pred, target = output.audio[row : row + 1, :length], wav[row : row + 1, :length]
                terms = loss(pred, target)
                values = (
                    float(terms.total) + quantizer_loss,
                    float(terms.waveform_l1),
                    float(terms.stft),
                    float(terms.mel),
                    float(terms.envelope),
                    quantizer_loss,
                    float(mel_distance(pred, target, model.sample_rate)),
                )
                sums[: len(LOSS_TERMS)] += torch.tensor(values, dtype=torch.float64)
                sums[len(LOSS_TERMS) : -1] += commitment
                sums[-1] += 1
                usage.update(output.codes[row : row + 1, model.pitch_rows :, : model.num_frames(length)])
                if len(examples) < num_examples:
                    utterance = validation_set.utterances[indices[row]]
                    examples.append(ValidationExample(utterance.id, target[0].cpu(), pred[0].cpu()))
    finally:
        model.train(was_training)
    all_reduce_sum(sums)
    all_reduce_sum(torch.from_numpy(usage.counts))  # shares memory: reduced in place
    count = max(1.0, float(sums[-1]))
    metrics: dict[str, float | list[float]] = {
        name: float(sums[index]) / count for index, name in enumerate(LOSS_TERMS)
    }
    metrics["commitment"] = (sums[len(LOSS_TERMS) : -1] / count).tolist()
    summary = usage.summary()
    metrics["codebook_usage"] = summary.usage.tolist()
    metrics["perplexity"] = summary.perplexity.tolist()
    metrics["num_utterances"] = float(sums[-1])
    metrics["seconds"] = validation_set.seconds
    return ValidationResult(metrics, examples)
