"""Are the tokens phonetic? Purity, PNMI and run lengths of each codebook, and linear probes of the latent.

Over the frames of phone-aligned speech (``phone_alignment``), with phone y and code z in each frame, the
counts of (y, z) pairs give a joint distribution p(y, z); as in HuBERT's analysis of its units (Hsu et al.,
2021, https://arxiv.org/abs/2106.07447, Sec. IV-G):

    phone purity = sum_z p(z) max_y p(y | z)   frame accuracy when each code is read as its most frequent phone
    code purity  = sum_y p(y) max_z p(z | y)   HuBERT's "cluster purity": how concentrated a phone's codes are
    PNMI         = I(y; z) / H(y)              phone-normalised mutual information: the share of the phone's
                                               entropy the code explains (1: the code determines the phone)

and, from the codes alone, the mean run length (frames per run of identical consecutive codes, within an
utterance) and the deduplicated token rate (runs per second: the tokens a language model would read after
collapsing repeats, as unit LMs such as GSLM do). Each codebook is scored on its own, the first one being the
one a speech LM would read first; the pitch row is reported apart (it codes F0, not phones).

These plug-in estimates grow with K against the number of frames (with K = 1024 and 1,700 frames most codes
occur once or twice, and each then looks pure). The held-out phone purity cannot be inflated that way: each
code is read as the phone it most often stands for in the other utterances (5 folds of whole utterances), and
the share of frames read right is counted. Its bias at small sizes goes the other way (a code seen a few times
elsewhere is read by a noisy vote), so it ranks code streams of different K fairly only with many frames per
code too; codes that carry nothing score at most the most frequent phone's share.

Baselines on the same frames, in the same run:

* k-means units of log-mel frames (80 bands, a 25 ms window centred on each token frame, standardised) with
  the codebook's K (and any other K asked for): the acoustic-unit baseline of HuBERT's first iteration.
  k-means++ seeding, then Lloyd's iterations, fit on the probed frames themselves; a fit on the frames it is
  scored on can only help the baseline (its K clusters follow these very voices and utterances, and with few
  frames per cluster each looks pure), so codes that beat it do so conservatively.
* with ``kmeans_fit`` (``--kmeans-fit DATA``), the same k-means fit on the log-mel frames of other speech
  (standardised with their statistics) and applied to the probed frames by nearest centroid: the protocol of
  HuBERT's analysis, where units are learnt on training speech and scored on held-out speech, as the tokenizer's
  codebooks are. Speech that holds a probed utterance is refused.
* uniformly random codes with the same K: they carry no information about the phone, so their PNMI and
  purities are the plug-in estimates' upward bias at this K and number of frames (large when K is not
  small against the frames: with 1,500 frames and K = 1024 most codes occur once or twice).
* the phone labels themselves, run through the run-length measures: a phone lasts this many frames.

Linear probes: a logistic regression (full-batch Adam, zero-initialised, standardised inputs) from per-frame
features to the phone, trained on the frames of a seeded 80% of the utterances and tested on the frames of
the rest (whole utterances held out). Features: the encoder's latent before quantization, the quantized
latent the decoder reads (all codebooks, and the first codebook alone), log-mel frames, and log-mel frames
with two neighbours each side (the latent sees context too); the most frequent training phone is the floor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torch import nn

from vqaudio.codec.quantization.vq import nearest_codes
from vqaudio.config import THREADS, check_value
from vqaudio.errors import DataError, InputError
from vqaudio.evaluation.phone_alignment import PHONE_SET, PhoneAlignments, frame_labels, read_alignments
from vqaudio.features import LogMel
from vqaudio.io.audio import load_audio
from vqaudio.progress import progress_bar

if TYPE_CHECKING:
    from vqaudio.codec.tokenizer import Tokenizer

LOG_MEL_BANDS = 80
LOG_MEL_WINDOW_SECONDS = 0.025
CONTEXT_FRAMES = 2  # each side, for the stacked log-mel probe
HELDOUT_FOLDS = 5  # of the held-out phone purity, over utterances
KMEANS_OTHER_SPEECH = "k-means log-mel of other speech"  # its rows' name, before ", K=..."
FEW_FRAMES_PER_CODE = 20  # below this many frames per code the plug-in estimates are biased noticeably


@dataclass(frozen=True)
class ProbeOptions:
    """How the probe runs.

    kmeans_k: codebook sizes of the k-means (and random-code) baselines; None: the tokenizer's codebook size.
    kmeans_iterations: at most this many Lloyd iterations (stops earlier when no frame changes cluster).
    kmeans_fit: a corpus of other speech (a manifest, audio folder or LibriSpeech tree; ``load_corpus``) whose
        log-mel frames fit a second k-means baseline per K, applied to the probed frames; None: none.
    kmeans_fit_frames: at most this many frames of ``kmeans_fit`` (whole utterances in a seeded order).
    test_fraction: share of the utterances held out for testing the linear probes (at least one).
    probe_steps: full-batch Adam steps of each linear probe.
    seed: of k-means, the random codes and the utterance split.
    threads: torch intra-op threads (0: torch's default).
    progress: a progress bar over utterances.
    """

    kmeans_k: tuple[int, ...] | None = None
    kmeans_iterations: int = 100
    kmeans_fit: str | None = None
    kmeans_fit_frames: int = 200_000
    test_fraction: float = 0.2
    probe_steps: int = 300
    seed: int = 0
    threads: int = 0
    progress: bool = True


class CodeScores(NamedTuple):
    """One row of codes over the probed frames."""

    name: str  # "codebook 1", "pitch row", "k-means log-mel", "random", "phones"
    kind: str  # "codebook", "pitch", "kmeans", "random" or "phones" (the reference)
    num_codes: int  # K, the codes it can take
    used_codes: int  # distinct codes on the probed frames
    phone_purity: float
    code_purity: float
    pnmi: float
    mean_run_length: float  # frames per run of identical consecutive codes
    dedup_rate: float  # runs per second: tokens per second after collapsing repeats
    heldout_phone_purity: float  # phone purity with the code -> phone map learnt on other utterances


class LinearProbeScores(NamedTuple):
    """A logistic-regression probe from per-frame features to the phone."""

    name: str
    dim: int
    train_accuracy: float
    test_accuracy: float


class ProbeFrames(NamedTuple):
    """The probed frames, in utterance order.

    ids: [U] utterance ids; lengths: [U] frames of each.
    phones: [N] index into ``PHONE_SET`` of each frame's phone.
    codes: [N, P + n_q] the tokenizer's codes (pitch row first when it has one).
    features: name -> [N, D] float32 per-frame features for the linear probes and k-means.
    """

    ids: list[str]
    lengths: np.ndarray
    phones: np.ndarray
    codes: np.ndarray
    features: dict[str, np.ndarray]


@dataclass
class ProbeResult:
    """What ``run_probe`` measured (``probe_report`` renders it)."""

    source: str
    model: dict[str, Any]
    aligner: str
    options: ProbeOptions
    utterances: int
    frames: int
    seconds: float
    frame_rate: float
    phone_counts: dict[str, int]
    phone_entropy_bits: float
    codes: list[CodeScores]
    linear: list[LinearProbeScores]
    majority_accuracy: float  # the most frequent training phone, on the test frames
    split: dict[str, Any]  # train / test utterance and frame counts, the test ids
    notes: list[str] = field(default_factory=list)
    # options.kmeans_fit's source, utterances and frames (empty without it)
    kmeans_fit: dict[str, Any] = field(default_factory=dict)

    def row(self, name: str) -> CodeScores:
        for scores in self.codes:
            if scores.name == name:
                return scores
        raise KeyError(f"no row {name!r}; rows are {[scores.name for scores in self.codes]}")


# --------------------------------------------------------------------------------------------------
# The measures
# --------------------------------------------------------------------------------------------------
def contingency(phones: np.ndarray, codes: np.ndarray, num_phones: int, num_codes: int) -> np.ndarray:
    """[num_phones, num_codes] counts of frames with each (phone, code) pair; ``phones``, ``codes``: [N] ints."""
    phones, codes = np.asarray(phones, dtype=np.int64), np.asarray(codes, dtype=np.int64)
    if phones.shape != codes.shape or phones.ndim != 1:
        raise ValueError(f"phones and codes must be [N] of the same N, got {phones.shape} and {codes.shape}")
    if phones.size and (
        phones.min() < 0 or phones.max() >= num_phones or codes.min() < 0 or codes.max() >= num_codes
    ):
        raise ValueError(f"phones must lie in 0..{num_phones - 1} and codes in 0..{num_codes - 1}")
    counts = np.bincount(phones * num_codes + codes, minlength=num_phones * num_codes)
    return counts.reshape(num_phones, num_codes)


def purity_and_pnmi(counts: np.ndarray) -> tuple[float, float, float]:
    """(phone purity, code purity, PNMI) of a [phones, codes] count table (see the module docstring).

    PNMI is NaN when the frames hold a single phone (H(y) = 0: nothing to explain).
    Raises:
        ValueError: no frames.
    """
    total = counts.sum()
    if total <= 0:
        raise ValueError("purity_and_pnmi needs at least one frame")
    joint = counts / total  # p(y, z)
    phone_purity = float(joint.max(axis=0).sum())  # sum_z p(z) max_y p(y|z) = sum_z max_y p(y, z)
    code_purity = float(joint.max(axis=1).sum())
    p_phone, p_code = joint.sum(axis=1), joint.sum(axis=0)
    nonzero = joint > 0
    outer = np.outer(p_phone, p_code)
    mutual = float((joint[nonzero] * np.log(joint[nonzero] / outer[nonzero])).sum())
    phone_entropy = entropy(p_phone)
    pnmi = mutual / phone_entropy if phone_entropy > 0 else math.nan
    return phone_purity, code_purity, min(max(pnmi, 0.0), 1.0) if math.isfinite(pnmi) else pnmi


def entropy(probabilities: np.ndarray) -> float:
    """Entropy in nats of a distribution (zeros ignored)."""
    p = probabilities[probabilities > 0]
    return float(-(p * np.log(p)).sum())


def mean_run_length(codes: np.ndarray, lengths: Sequence[int]) -> tuple[float, int]:
    """(frames per run of identical consecutive codes, number of runs); runs never cross utterances.

    Args:
        codes: [N] codes of the utterances one after the other.
        lengths: frames of each utterance (summing to N).
    """
    codes = np.asarray(codes)
    if int(np.sum(lengths)) != codes.shape[0]:
        raise ValueError(f"lengths sum to {int(np.sum(lengths))} but there are {codes.shape[0]} codes")
    if codes.shape[0] == 0:
        raise ValueError("mean_run_length needs at least one frame")
    starts = np.zeros(codes.shape[0], dtype=bool)
    starts[0] = True
    starts[1:] = codes[1:] != codes[:-1]
    boundaries = np.cumsum(lengths)[:-1]  # the first frame of every utterance but the first starts a run
    starts[boundaries[boundaries < codes.shape[0]]] = True
    runs = int(starts.sum())
    return codes.shape[0] / runs, runs


def heldout_phone_purity(
    phones: np.ndarray, codes: np.ndarray, folds: np.ndarray, num_phones: int, num_codes: int
) -> float:
    """Phone purity without the small-sample bias: each frame's code is read as the phone it most often
    stands for in the *other* folds (a code those never use: their most frequent phone); the share of frames
    read right. Codes that carry nothing about the phone score at most the most frequent phone's share (about
    sum_y p(y)^2 when every code is rare), however many codes there are.

    Args:
        phones, codes: [N] ints.
        folds: [N] fold of each frame (whole utterances per fold, ``utterance_folds``).
    """
    phones, codes = np.asarray(phones, dtype=np.int64), np.asarray(codes, dtype=np.int64)
    correct = 0
    for fold in np.unique(folds):
        held = folds == fold
        counts = contingency(phones[~held], codes[~held], num_phones, num_codes)  # [P, K]
        reading = counts.argmax(axis=0)  # [K]
        reading[counts.sum(axis=0) == 0] = counts.sum(axis=1).argmax()
        correct += int((reading[codes[held]] == phones[held]).sum())
    return correct / phones.shape[0]


def utterance_folds(num_utterances: int, num_folds: int, seed: int) -> np.ndarray:
    """[U] fold of each utterance: a seeded shuffle dealt into ``min(num_folds, U)`` folds of near-equal size."""
    folds = np.empty(num_utterances, dtype=np.int64)
    folds[np.random.default_rng(seed).permutation(num_utterances)] = np.arange(num_utterances) % min(
        num_folds, num_utterances
    )
    return folds


def code_scores(
    name: str,
    kind: str,
    codes: np.ndarray,
    phones: np.ndarray,
    lengths: Sequence[int],
    num_codes: int,
    frame_rate: float,
    folds: np.ndarray | None = None,
) -> CodeScores:
    """Every measure of one row of codes ([N]) against the frames' phones ([N] indices into ``PHONE_SET``).

    ``folds`` ([N], whole utterances each) enables the held-out phone purity (NaN without).
    """
    counts = contingency(phones, codes, len(PHONE_SET), num_codes)
    phone_purity, code_purity, pnmi = purity_and_pnmi(counts)
    run_length, _ = mean_run_length(codes, lengths)
    used = int((counts.sum(axis=0) > 0).sum())
    heldout = (
        math.nan
        if folds is None or len(np.unique(folds)) < 2
        else heldout_phone_purity(phones, codes, folds, len(PHONE_SET), num_codes)
    )
    return CodeScores(
        name,
        kind,
        num_codes,
        used,
        phone_purity,
        code_purity,
        pnmi,
        run_length,
        frame_rate / run_length,
        heldout,
    )


def kmeans(features: np.ndarray, num_clusters: int, iterations: int = 100, seed: int = 0) -> np.ndarray:
    """k-means units: k-means++ seeding (Arthur and Vassilvitskii, 2007), then Lloyd's iterations.

    Args:
        features: [N, D] float vectors, N >= num_clusters.
        num_clusters: K.
        iterations: at most this many Lloyd iterations; stops when no vector changes cluster.
        seed: of the seeding; the same seed and data give the same clusters.
    Returns:
        [N] int64 cluster of each vector. An empty cluster keeps its centroid.
    """
    return fit_kmeans(features, num_clusters, iterations, seed)[1]


def fit_kmeans(
    features: np.ndarray, num_clusters: int, iterations: int = 100, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``kmeans``, returning ([K, D] float32 centroids, [N] int64 clusters): the centroids assign other
    vectors (``nearest_codes``)."""
    data = torch.as_tensor(np.asarray(features, dtype=np.float32))
    num_rows = data.shape[0]
    if data.dim() != 2 or not 1 <= num_clusters <= num_rows:
        raise InputError(
            f"kmeans needs features [N, D] and 1 <= K <= N, got shape {tuple(data.shape)} and K={num_clusters}"
        )
    generator = torch.Generator().manual_seed(seed)
    centroids = torch.empty(num_clusters, data.shape[1])
    centroids[0] = data[torch.randint(num_rows, (1,), generator=generator)]
    closest = (data - centroids[0]).pow(2).sum(dim=1)  # squared distance to the nearest centroid so far
    for index in range(1, num_clusters):
        total = float(closest.sum())
        if total > 0:  # the next seed with probability proportional to its squared distance
            pick = torch.multinomial(closest / total, 1, generator=generator)
        else:  # fewer distinct vectors than clusters: duplicates
            pick = torch.randint(num_rows, (1,), generator=generator)
        centroids[index] = data[pick]
        closest = torch.minimum(closest, (data - centroids[index]).pow(2).sum(dim=1))
    assignment = nearest_codes(data, centroids)
    for _ in range(iterations):
        counts = torch.bincount(assignment, minlength=num_clusters).to(data.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, data)
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centroids)
        updated = nearest_codes(data, centroids)
        if torch.equal(updated, assignment):
            break
        assignment = updated
    return centroids.numpy(), assignment.numpy()


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    num_classes: int,
    steps: int = 300,
    learning_rate: float = 0.05,
    weight_decay: float = 1e-4,
) -> tuple[float, float]:
    """(train accuracy, test accuracy) of a multinomial logistic regression.

    Inputs are standardised with the training frames' mean and deviation; the weights start at zero, so the
    result does not depend on a seed. Full-batch Adam for ``steps`` steps with L2 ``weight_decay``.
    """
    x = torch.as_tensor(np.asarray(train_x, dtype=np.float32))
    y = torch.as_tensor(np.asarray(train_y, dtype=np.int64))
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
    x = (x - mean) / std
    test = (torch.as_tensor(np.asarray(test_x, dtype=np.float32)) - mean) / std
    layer = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    optimizer = torch.optim.Adam(layer.parameters(), lr=learning_rate, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(layer(x), y)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        train_accuracy = float((layer(x).argmax(dim=1) == y).float().mean())
        test_accuracy = float((layer(test).argmax(dim=1) == torch.as_tensor(test_y)).float().mean())
    return train_accuracy, test_accuracy


def split_utterances(num_utterances: int, test_fraction: float, seed: int) -> np.ndarray:
    """[U] bool, True for the held-out (test) utterances: a seeded ``test_fraction`` of them, at least one
    and at most all but one."""
    if num_utterances < 2:
        raise InputError(f"a train/test split needs at least 2 utterances, got {num_utterances}")
    count = min(num_utterances - 1, max(1, round(test_fraction * num_utterances)))
    test = np.zeros(num_utterances, dtype=bool)
    test[np.random.default_rng(seed).permutation(num_utterances)[:count]] = True
    return test


# --------------------------------------------------------------------------------------------------
# A model on an alignment folder
# --------------------------------------------------------------------------------------------------
def collect_frames(aligned: PhoneAlignments, tokenizer: Tokenizer, progress: bool = True) -> ProbeFrames:
    """Encode every aligned utterance and label its frames with their phones.

    Each frame's phone is the one covering most of the token frame's span (``frame_labels`` at the
    tokenizer's frame rate and frame count).
    """
    model = tokenizer.model
    sample_rate, pitch_rows = tokenizer.sample_rate, tokenizer.pitch_rows
    log_mel = probe_log_mel(tokenizer)
    phone_index = {phone: index for index, phone in enumerate(PHONE_SET)}
    residual = tokenizer.config.model.quantizer.kind == "residual"
    ids, lengths, phones, codes = [], [], [], []
    features: dict[str, list[np.ndarray]] = {}
    bar = progress_bar(aligned.utterances, desc="probe", unit="utt", disable=not progress)
    with torch.inference_mode():
        for utterance in bar:
            wav = load_audio(utterance.path, sample_rate).to(tokenizer.device)
            utterance_codes = tokenizer.encode(wav, sample_rate)  # [P + K, F]
            num_frames = utterance_codes.shape[-1]
            labels = frame_labels(aligned.segments[utterance.id], num_frames, tokenizer.frame_rate)
            latent = model.encode_latent(wav[None])  # [1, D, F]
            frame_features = {
                "latent": latent[0],
                # the codes' own latent (the tokenizer's settings, e.g. a first-codebook hold, included)
                "quantized": model.quantizer.decode(utterance_codes[pitch_rows:][None])[0],
                "log_mel": log_mel(wav[None])[0],
            }
            if residual:  # a residual VQ's first codebook decodes on its own
                first = utterance_codes[pitch_rows : pitch_rows + 1][None]
                frame_features["quantized_codebook1"] = model.quantizer.decode(first)[0]
            for name, value in frame_features.items():
                features.setdefault(name, []).append(value.T.float().cpu().numpy())  # [F, D]
            ids.append(utterance.id)
            lengths.append(num_frames)
            phones.append(np.array([phone_index[label] for label in labels], dtype=np.int64))
            codes.append(utterance_codes.T.cpu().numpy())
        bar.close()
    stacked = {name: np.concatenate(values) for name, values in features.items()}
    stacked["log_mel_context"] = np.concatenate(
        [_with_context(mel, CONTEXT_FRAMES) for mel in features["log_mel"]]
    )
    return ProbeFrames(ids, np.array(lengths), np.concatenate(phones), np.concatenate(codes), stacked)


def probe_log_mel(tokenizer: Tokenizer) -> LogMel:
    """The probe's log-mel frames: one per token frame, a 25 ms window (at least a hop) centred on it."""
    sample_rate = tokenizer.sample_rate
    return LogMel(
        sample_rate,
        max(round(LOG_MEL_WINDOW_SECONDS * sample_rate), tokenizer.hop_length),
        tokenizer.hop_length,
        LOG_MEL_BANDS,
    ).to(tokenizer.device)


def other_speech_log_mel(
    source: str | Path,
    tokenizer: Tokenizer,
    max_frames: int,
    seed: int = 0,
    exclude: Sequence[Path] = (),
    progress: bool = True,
) -> tuple[np.ndarray, int]:
    """([N, 80] log-mel frames, utterances read) of a corpus for the k-means fit of other speech: whole
    utterances in a seeded order until ``max_frames`` (the last one cut).

    Raises:
        DataError: the corpus holds one of the ``exclude`` files (the probed ones), or yields no frame.
    """
    from vqaudio.data.corpus import load_corpus

    utterances = load_corpus(source)
    probed = {path.resolve() for path in exclude}
    shared = [utterance.id for utterance in utterances if Path(utterance.path).resolve() in probed]
    if shared:
        raise DataError(
            f"{source}: the k-means fit speech holds {len(shared)} of the probed utterances (e.g. {shared[0]}); "
            "--kmeans-fit (kmeans_fit) must be other speech, such as the tokenizer's training data"
        )
    order = np.random.default_rng(seed).permutation(len(utterances))
    log_mel = probe_log_mel(tokenizer)
    frames: list[np.ndarray] = []
    total = 0
    bar = progress_bar(total=max_frames, desc="k-means fit speech", unit="frame", disable=not progress)
    with torch.inference_mode():
        for index in order:
            if total >= max_frames:
                break
            wav = load_audio(utterances[index].path, tokenizer.sample_rate).to(tokenizer.device)
            mel = log_mel(wav[None])[0].T.float().cpu().numpy()[: max_frames - total]  # [F, 80]
            frames.append(mel)
            total += mel.shape[0]
            bar.update(mel.shape[0])
    bar.close()
    if not total:
        raise DataError(f"{source}: no audio frames for the k-means fit; pass a corpus of speech")
    return np.concatenate(frames), len(frames)


def _with_context(frames: np.ndarray, context: int) -> np.ndarray:
    """[F, D] -> [F, (2 * context + 1) * D]: each frame with its neighbours (edges repeated)."""
    padded = np.pad(frames, ((context, context), (0, 0)), mode="edge")
    return np.concatenate(
        [padded[offset : offset + frames.shape[0]] for offset in range(2 * context + 1)], axis=1
    )


LINEAR_FEATURES = (
    ("latent", "encoder latent (before quantization)"),
    ("quantized", "quantized latent, all codebooks (the decoder's input)"),
    ("quantized_codebook1", "quantized latent, first codebook alone"),
    ("log_mel", "log-mel frame (baseline)"),
    ("log_mel_context", f"log-mel, ±{CONTEXT_FRAMES} frames stacked (baseline)"),
)


def run_probe(
    alignments: str | Path, tokenizer: Tokenizer, options: ProbeOptions = ProbeOptions()
) -> ProbeResult:
    """The phonetic probe of a tokenizer on an alignment folder (``vqaudio align``); no files are written.

    Raises:
        DataError: not an alignment folder, fewer than 2 utterances.
        ValueError: invalid options.
    """
    _check_options(options)
    model_k = tokenizer.codebook_size
    k_values = tuple(dict.fromkeys(options.kmeans_k or (model_k,)))
    previous_threads = torch.get_num_threads()
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        aligned = read_alignments(alignments)
        fit_mel, fit_utterances = None, 0
        if options.kmeans_fit is not None:  # read first: a wrong corpus fails before the probe's work
            fit_mel, fit_utterances = other_speech_log_mel(
                options.kmeans_fit,
                tokenizer,
                options.kmeans_fit_frames,
                options.seed,
                exclude=[Path(utterance.path) for utterance in aligned.utterances],
                progress=options.progress,
            )
        frames = collect_frames(aligned, tokenizer, options.progress)
        result = _measure(frames, tokenizer, k_values, options, fit_mel)
    finally:
        torch.set_num_threads(previous_threads)
    if fit_mel is not None:
        result.kmeans_fit = {
            "source": str(options.kmeans_fit),
            "utterances": fit_utterances,
            "frames": int(fit_mel.shape[0]),
        }
    result.source = str(alignments)
    result.aligner = str(aligned.meta.get("aligner", "unknown"))
    return result


def _measure(
    frames: ProbeFrames,
    tokenizer: Tokenizer,
    k_values: tuple[int, ...],
    options: ProbeOptions,
    fit_mel: np.ndarray | None = None,
) -> ProbeResult:
    num_frames, frame_rate = frames.phones.shape[0], tokenizer.frame_rate
    if len(frames.ids) < 2:
        raise DataError(
            f"the probe needs at least 2 aligned utterances (a train/test split), got {len(frames.ids)}"
        )
    notes = []
    too_many = [k for k in k_values if k > num_frames]
    if too_many:
        notes.append(
            f"k-means with K={', '.join(map(str, too_many))} needs at least K frames and the aligned utterances "
            f"have {num_frames}: left out; align more speech, or add a smaller K (--kmeans-k)"
        )
    lengths = frames.lengths.tolist()

    folds = np.repeat(utterance_folds(len(frames.ids), HELDOUT_FOLDS, options.seed), frames.lengths)

    def score(name: str, kind: str, codes: np.ndarray, num_codes: int) -> CodeScores:
        return code_scores(name, kind, codes, frames.phones, lengths, num_codes, frame_rate, folds)

    rows = [score("phones", "phones", frames.phones, len(PHONE_SET))]
    pitch_rows = tokenizer.pitch_rows
    if pitch_rows:
        rows.append(score("pitch row", "pitch", frames.codes[:, 0], tokenizer.config.model.pitch.levels))
    for index in range(tokenizer.num_codebooks):
        rows.append(
            score(
                f"codebook {index + 1}",
                "codebook",
                frames.codes[:, pitch_rows + index],
                tokenizer.codebook_size,
            )
        )
    mel = frames.features["log_mel"]
    standardized = (mel - mel.mean(axis=0)) / np.maximum(mel.std(axis=0), 1e-6)
    rng = np.random.default_rng(options.seed)
    for k in (k for k in k_values if k <= num_frames):
        units = kmeans(standardized, k, options.kmeans_iterations, options.seed)
        rows.append(score(f"k-means log-mel, K={k}", "kmeans", units, k))
    if fit_mel is not None:
        fit_mean, fit_std = fit_mel.mean(axis=0), np.maximum(fit_mel.std(axis=0), 1e-6)
        fit_standardized = (fit_mel - fit_mean) / fit_std
        probed = torch.as_tensor(((mel - fit_mean) / fit_std).astype(np.float32))
        for k in k_values:
            if k > fit_mel.shape[0]:
                notes.append(
                    f"k-means of other speech with K={k} needs at least K frames and --kmeans-fit gave "
                    f"{fit_mel.shape[0]}: left out"
                )
                continue
            centroids, _ = fit_kmeans(fit_standardized, k, options.kmeans_iterations, options.seed)
            units = nearest_codes(probed, torch.as_tensor(centroids)).numpy()
            rows.append(score(f"{KMEANS_OTHER_SPEECH}, K={k}", "kmeans", units, k))
    for k in k_values:
        random_codes = rng.integers(k, size=num_frames, dtype=np.int64)
        rows.append(score(f"random, K={k}", "random", np.asarray(random_codes), k))

    test_utterances = split_utterances(len(frames.ids), options.test_fraction, options.seed)
    test = np.repeat(test_utterances, frames.lengths)
    train_y, test_y = frames.phones[~test], frames.phones[test]
    linear = []
    for name, description in LINEAR_FEATURES:
        if name not in frames.features:
            continue
        values = frames.features[name]
        train_accuracy, test_accuracy = linear_probe(
            values[~test], train_y, values[test], test_y, len(PHONE_SET), options.probe_steps
        )
        linear.append(LinearProbeScores(description, values.shape[1], train_accuracy, test_accuracy))
    majority = int(np.bincount(train_y, minlength=len(PHONE_SET)).argmax())

    phone_counts = np.bincount(frames.phones, minlength=len(PHONE_SET))
    few = [k for k in (*k_values, tokenizer.codebook_size) if num_frames / k < FEW_FRAMES_PER_CODE]
    if few:
        k = max(few)
        notes.append(
            f"{num_frames} frames for K={k} codes is {num_frames / k:.1f} frames a code: plug-in purities and "
            "PNMI are biased upward at this size; the random-codes row of the same K (which carries no "
            "phone information) measures the bias. Probe more speech for a tighter comparison."
        )
    return ProbeResult(
        source="",
        model={
            "name": tokenizer.name,
            "hash": tokenizer.hash,
            "frame_rate": frame_rate,
            "num_codebooks": tokenizer.num_codebooks,
            "codebook_size": tokenizer.codebook_size,
            "pitch_rows": pitch_rows,
            "first_codebook_hold": tokenizer.first_codebook_hold,
        },
        aligner="",
        options=options,
        utterances=len(frames.ids),
        frames=num_frames,
        seconds=num_frames / frame_rate,
        frame_rate=frame_rate,
        phone_counts={
            phone: int(count) for phone, count in zip(PHONE_SET, phone_counts, strict=True) if count
        },
        phone_entropy_bits=entropy(phone_counts / num_frames) / math.log(2),
        codes=rows,
        linear=linear,
        majority_accuracy=float(np.mean(test_y == majority)),
        split={
            "train_utterances": int((~test_utterances).sum()),
            "test_utterances": int(test_utterances.sum()),
            "train_frames": int((~test).sum()),
            "test_frames": int(test.sum()),
            "test_ids": [utt_id for utt_id, held in zip(frames.ids, test_utterances, strict=True) if held],
        },
        notes=notes,
    )


def _check_options(options: ProbeOptions) -> None:
    if options.kmeans_k is not None and (not options.kmeans_k or any(k < 1 for k in options.kmeans_k)):
        raise InputError(f"kmeans_k must be positive integers, got {options.kmeans_k}")
    if options.kmeans_fit_frames < 1:
        raise InputError(f"kmeans_fit_frames must be at least 1, got {options.kmeans_fit_frames}")
    if options.kmeans_iterations < 1 or options.probe_steps < 1:
        raise ValueError(
            f"kmeans_iterations and probe_steps must be at least 1, got {options.kmeans_iterations}, "
            f"{options.probe_steps}"
        )
    if not 0 < options.test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {options.test_fraction}")
    check_value("--threads", options.threads, THREADS)
