"""How well the prior predicts held-out tokens: bits per token, frame and second, beside n-gram baselines.

The prior's number is its exact negative log-likelihood (every codebook of every frame, the first frame of
each utterance included), in bits. Baselines (``vqaudio.prior.ngram``) are the unigram and bigram models of
each codebook: cross-entropies of models estimated on the training tokens. Without training counts (a
prior copied without its ``ngram_counts.npz``, such as the embedded one, and no ``--train``) the baselines
are left out and the report says how to get them: the plug-in entropies of the scored tokens themselves
would be badly optimistic for 1024-code bigrams and would read as if the prior lost to them.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch

from vqaudio.prior.data import Utterances, length_batches
from vqaudio.prior.ngram import NgramCounts, cross_entropy_bits
from vqaudio.prior.wavenet import WaveNetPrior

MAX_BATCH_FRAMES = 8192  # padded frames per evaluation batch

TRAINING_BASELINE = (
    "cross-entropy of per-codebook unigram (add-1/2) and bigram (Witten-Bell) models estimated on the "
    "training tokens ({source})"
)
NO_BASELINE = (
    "none: the prior carries no n-gram counts of its training tokens; pass --train TRAIN_TOKENS for unigram "
    "and bigram baselines"
)


class NllTotals(NamedTuple):
    nats: np.ndarray  # [K] summed negative log-likelihood per codebook, nats
    num_frames: int


@torch.inference_mode()
def corpus_nll(
    model: WaveNetPrior, utterances: Utterances, max_batch_frames: int = MAX_BATCH_FRAMES
) -> NllTotals:
    """Negative log-likelihood of whole utterances, summed per codebook.

    Utterances are batched by length; padding sits after each sequence, so causality keeps it from
    touching real frames, and it is masked out of the sums.
    """
    was_training = model.training
    model.eval()
    lengths = [codes.shape[1] for codes in utterances.codes]
    device = model.start.device
    nats = torch.zeros(model.num_codebooks, dtype=torch.float64)
    for batch in length_batches(lengths, max_batch_frames):
        longest = max(lengths[i] for i in batch)
        codes = torch.zeros(len(batch), model.num_codebooks, longest, dtype=torch.long)
        mask = torch.zeros(len(batch), longest, dtype=torch.bool)
        for row, index in enumerate(batch):
            codes[row, :, : lengths[index]] = torch.from_numpy(
                np.asarray(utterances.codes[index], dtype=np.int64)
            )
            mask[row, : lengths[index]] = True
        conditions = None
        if utterances.conditions is not None:
            conditions = torch.tensor(
                [utterances.conditions[i] for i in batch], dtype=torch.long, device=device
            )
        log_prob = model.log_prob(codes.to(device), conditions).cpu()  # [B, K, F]
        nats -= (log_prob * mask[:, None]).sum(dim=(0, 2)).double()
    model.train(was_training)
    return NllTotals(nats.numpy(), sum(lengths))


class CodebookBits(NamedTuple):
    codebook: int  # 1-based, as printed
    bits_per_token: float
    unigram_bits_per_token: float | None  # None: no baselines (no training counts)
    bigram_bits_per_token: float | None


class PriorReport(NamedTuple):
    """``vqaudio prior eval``'s numbers; ``to_dict`` is its JSON."""

    num_utterances: int
    num_frames: int
    seconds: float
    frame_rate: float
    num_codebooks: int
    codebook_size: int
    bits_per_token: float
    bits_per_frame: float
    bits_per_second: float
    unigram_bits_per_token: float | None  # None: no baselines (no training counts)
    bigram_bits_per_token: float | None
    baseline: str  # how the unigram / bigram numbers were obtained
    codebooks: list[CodebookBits]

    @property
    def uniform_bits_per_token(self) -> float:
        return math.log2(self.codebook_size)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values; the baseline entries are None when there are no baselines."""
        result = self._asdict()
        K = self.num_codebooks
        unigram, bigram = self.unigram_bits_per_token, self.bigram_bits_per_token
        result.update(
            unigram_bits_per_frame=None if unigram is None else unigram * K,
            bigram_bits_per_frame=None if bigram is None else bigram * K,
            unigram_bits_per_second=None if unigram is None else unigram * K * self.frame_rate,
            bigram_bits_per_second=None if bigram is None else bigram * K * self.frame_rate,
            uniform_bits_per_token=self.uniform_bits_per_token,
            beats_unigram=None if unigram is None else self.bits_per_token < unigram,
            beats_bigram=None if bigram is None else self.bits_per_token < bigram,
            codebooks=[row._asdict() for row in self.codebooks],
        )
        return result


def evaluate_prior(
    model: WaveNetPrior,
    utterances: Utterances,
    frame_rate: float,
    training_counts: NgramCounts | None = None,
    training_source: str = "",
) -> PriorReport:
    """Score ``utterances`` with the prior and with the n-gram baselines.

    Args:
        model: the prior network.
        utterances: held-out tokens (validated, with conditions for a conditioned prior).
        frame_rate: token frames per second, for bits per second.
        training_counts: n-gram counts of the training tokens; None: no baselines.
        training_source: where the training counts came from, for the report.
    """
    totals = corpus_nll(model, utterances)
    bits = totals.nats / math.log(2) / totals.num_frames  # [K] bits per token of each codebook
    K = model.num_codebooks
    unigram: list[float | None] = [None] * K
    bigram: list[float | None] = [None] * K
    unigram_mean = bigram_mean = None
    description = NO_BASELINE
    if training_counts is not None:
        baseline = cross_entropy_bits(training_counts, utterances.codes)
        unigram, bigram = [float(x) for x in baseline.unigram], [float(x) for x in baseline.bigram]
        unigram_mean, bigram_mean = float(baseline.unigram.mean()), float(baseline.bigram.mean())
        description = TRAINING_BASELINE.format(source=training_source)
    rows = [CodebookBits(k + 1, float(bits[k]), unigram[k], bigram[k]) for k in range(K)]
    per_token = float(bits.mean())
    return PriorReport(
        num_utterances=len(utterances.ids),
        num_frames=totals.num_frames,
        seconds=totals.num_frames / frame_rate,
        frame_rate=frame_rate,
        num_codebooks=K,
        codebook_size=model.codebook_size,
        bits_per_token=per_token,
        bits_per_frame=per_token * K,
        bits_per_second=per_token * K * frame_rate,
        unigram_bits_per_token=unigram_mean,
        bigram_bits_per_token=bigram_mean,
        baseline=description,
        codebooks=rows,
    )


def format_report(report: PriorReport, title: str) -> str:
    """The human-readable table printed by ``vqaudio prior eval`` (baseline columns only when there are any)."""
    K = report.num_codebooks
    unigram, bigram = report.unigram_bits_per_token, report.bigram_bits_per_token
    with_baselines = unigram is not None and bigram is not None
    lines = [
        title,
        f"{report.num_utterances} utterances, {report.num_frames} frames ({report.seconds:.1f} s at "
        f"{report.frame_rate:g} Hz), {K} codebooks x {report.codebook_size} codes "
        f"(uniform: {report.uniform_bits_per_token:.2f} bits per token)",
        f"baselines: {report.baseline}",
        "",
        f"{'codebook':>8}  {'prior':>7}"
        + (f"  {'unigram':>7}  {'bigram':>7}" if with_baselines else "")
        + "   bits per token",
    ]

    def columns(prior: float, unigram: float | None, bigram: float | None) -> str:
        if unigram is None or bigram is None:
            return f"{prior:7.3f}"
        return f"{prior:7.3f}  {unigram:7.3f}  {bigram:7.3f}"

    for row in report.codebooks:
        lines.append(
            f"{row.codebook:>8}  "
            + columns(row.bits_per_token, row.unigram_bits_per_token, row.bigram_bits_per_token)
        )
    lines += [f"{'all':>8}  " + columns(report.bits_per_token, unigram, bigram), ""]
    if unigram is not None and bigram is not None:
        lines += [
            f"bits per frame:  prior {report.bits_per_frame:.1f}, unigram {unigram * K:.1f}, "
            f"bigram {bigram * K:.1f}",
            f"bits per second: prior {report.bits_per_second:.0f}, "
            f"unigram {unigram * K * report.frame_rate:.0f}, bigram {bigram * K * report.frame_rate:.0f}",
        ]
    else:
        lines += [
            f"bits per frame:  prior {report.bits_per_frame:.1f}",
            f"bits per second: prior {report.bits_per_second:.0f}",
        ]
    return "\n".join(lines)
