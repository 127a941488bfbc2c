"""What an evaluation measured: the options it ran with, each system's scores and the whole result.

``evaluate`` fills these and ``report`` renders them; neither imports the other's internals.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from vqaudio.evaluation import alignment
from vqaudio.evaluation.baselines import Baseline
from vqaudio.evaluation.codebook_stats import CodebookStats
from vqaudio.evaluation.metrics import ClipScores

if TYPE_CHECKING:
    from vqaudio.evaluation.phonetic_probe import ProbeResult

ALIGNMENT_NOTE = (
    f"Baseline outputs are aligned to the reference before scoring: {alignment.METHOD}. vqaudio outputs are "
    "scored as decoded: the model returns exactly the input's samples, with no delay by construction."
)


@dataclass(frozen=True)
class EvalOptions:
    """What ``run_evaluation`` evaluates and how.

    n_q: codebook counts to evaluate; None: every bitrate the model serves (``served_n_q``).
    max_utterances: evaluate at most this many utterances, a seeded random subset spread over the corpus.
    max_seconds: stop adding utterances once this much audio is evaluated (whole utterances only).
    baselines: run the Codec2 / Opus baselines whose tools are installed.
    skip_bad: skip unreadable files (listed in the report) instead of failing on the first.
    num_examples: clips kept as WAVs and spectrograms, chosen by their score (``ExampleChoice``).
    threads: torch intra-op threads (0: torch's default); RTFs are measured with it.
    seed: of the utterance subset order.
    progress: show a tqdm bar over utterances.
    voice: Praat voicing / F0 / HNR and DNSMOS (``vqaudio.evaluation.voice``).
    wer: word error rates of pocketsphinx (English; about real time per system).
    language: of the corpus, when known; "en" turns the word error rates on.
    probe: an alignment folder (``vqaudio align``): add the phonetic probe of the model on its utterances.
    """

    n_q: tuple[int, ...] | None = None
    max_utterances: int | None = None
    max_seconds: float | None = None
    baselines: bool = True
    skip_bad: bool = False
    num_examples: int = 3
    threads: int = 0
    seed: int = 0
    progress: bool = True
    voice: bool = True
    wer: bool = False
    language: str | None = None
    probe: str | None = None


class SystemSpec(NamedTuple):
    """One system of the comparison: a bitrate of the model, or a baseline codec setting."""

    name: str  # "vqaudio_nq4", "codec2_3200", "opus_6k"
    family: str  # "vqaudio", "codec2", "opus", or "original" (the input itself)
    kbps: float  # nominal bitrate
    n_q: int | None  # vqaudio only
    tokens_per_second: float | None  # vqaudio only: (pitch rows + n_q) * frame_rate
    baseline: Baseline | None


@dataclass
class SystemResult:
    """Everything measured for one system over the evaluated utterances."""

    spec: SystemSpec
    scores: dict[str, ClipScores] = field(default_factory=dict)  # utterance id -> scores
    lags: dict[str, int] = field(default_factory=dict)  # utterance id -> samples (baselines only)
    encoded_bits: int = 0
    audio_seconds: float = 0.0  # of the utterances this system scored
    encode_seconds: float = 0.0
    decode_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)  # "utt: message" for clips the codec failed on

    @property
    def measured_kbps(self) -> float:
        return self.encoded_bits / self.audio_seconds / 1000 if self.audio_seconds else math.nan

    @property
    def encode_rtf(self) -> float:
        """Encoding time / audio duration (below 1: faster than real time)."""
        return self.encode_seconds / self.audio_seconds if self.audio_seconds else math.nan

    @property
    def decode_rtf(self) -> float:
        return self.decode_seconds / self.audio_seconds if self.audio_seconds else math.nan

    def values(self, metric: str) -> np.ndarray:
        """[N] the metric over the scored utterances, NaN where it failed or is unavailable."""
        return np.array([getattr(scores, metric) for scores in self.scores.values()], dtype=np.float64)

    def metric_failures(self, metric: str) -> list[str]:
        """``"utt: reason"`` for each utterance on which ``metric`` failed."""
        prefix = f"{metric}: "
        return [
            f"{utt}: {failure[len(prefix) :]}"
            for utt, scores in self.scores.items()
            for failure in scores.failures
            if failure.startswith(prefix)
        ]


# The input itself, scored on the metrics that need no reference (DNSMOS, WER against the transcript).
ORIGINAL = SystemSpec("original", "original", math.nan, None, None, None)


# The examples are ranked by the first of these that the ranked system was scored on (PESQ needs the
# 'metrics' extra and fails on clips under a quarter second; the mel distance is always measured).
EXAMPLE_RANKING_METRICS = ("pesq_wb", "stoi", "mel_distance")


class ExampleChoice(NamedTuple):
    """Which utterances are the report's examples, and why.

    The utterances ``system`` scored are ranked from worst to best by ``metric``; the examples are the
    median, the worst, the best, then the quartiles and so on (``evaluate.choose_examples``).
    """

    system: str  # the ranked system: the model at its highest evaluated n_q ("vqaudio_nq8")
    metric: str  # "pesq_wb"; "stoi" or "mel_distance" where PESQ was not measured
    candidates: int  # utterances ranked (scored on ``metric``, not silent)
    roles: dict[str, str]  # utterance id -> "worst", "median", "best", "percentile 25", ... (worst first)
    values: dict[str, float]  # utterance id -> its ``metric`` in ``system``


class EvaluatedUtterance(NamedTuple):
    id: str
    path: str
    seconds: float
    text: str | None = None  # the corpus transcript, when it has one


@dataclass
class EvalResult:
    """The numbers ``report.write_report`` renders (see there for the files)."""

    source: str
    model_path: str | None
    model: dict[str, Any]  # name, hash, rates, codebooks, ...
    environment: dict[str, Any]
    options: EvalOptions
    systems: list[SystemResult]
    original: SystemResult | None  # ORIGINAL's scores; None when no metric without reference was measured
    utterances: list[EvaluatedUtterance]
    skipped: list[tuple[str, str]]  # (path, error) of unreadable files (--skip-bad)
    code_counts: np.ndarray  # [K, codebook_size] over all evaluated utterances, full n_q
    codebooks: list[CodebookStats]
    unavailable_metrics: dict[str, str]  # metric -> note
    unavailable_baselines: dict[str, str]  # baseline name -> note
    notes: list[str]
    sample_rate: int
    frame_rate: float
    # utterance id -> {"original" or system name: [T] audio}, in the order of ``example_choice.roles``
    examples: dict[str, dict[str, np.ndarray]]
    probe: ProbeResult | None = None  # the phonetic probe (``EvalOptions.probe``)
    example_choice: ExampleChoice | None = None  # None when no example was asked for or none could be chosen

    def system(self, name: str) -> SystemResult:
        for system in self.systems:
            if system.spec.name == name:
                return system
        raise KeyError(f"no system {name!r}; systems are {[s.spec.name for s in self.systems]}")


def safe_name(text: str) -> str:
    """A file-name-safe form of an utterance id (``spk/chap/utt`` -> ``spk_chap_utt``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "clip"
