"""Phone labels for training crops: the phone each token frame of a crop covers (``loss.phone_weight``).

A tokenizer trained with a phone loss predicts, from each frame's first-codebook vector, the phone that frame
covers, so that the first codebook comes to carry phones (issue 26; SpeechTokenizer's idea, with phone labels
from forced alignment instead of a teacher). The labels come from ``vqaudio align`` folders whose utterances are
also in the training corpus, matched by utterance id; crops of the other utterances are unlabelled (left out of
the loss), so aligned and unaligned speech train together.

``LabelledCrops`` pairs each step's batch of ``RandomCrops`` with its labels ``[batch, frames]``: frame ``m``
of a crop takes the phone at the time its centre came from, through the crop's speed perturbation; frames past
the end of the utterance (zero padding), and crops that ``skip_bad`` took from another utterance, are
``IGNORE``. The labels depend on the step alone, like the crops.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vqaudio.data.augment import EDGE_SAMPLES
from vqaudio.data.crops import RandomCrops
from vqaudio.errors import DataError
from vqaudio.evaluation.phone_alignment import PHONE_SET, read_alignments

log = logging.getLogger(__name__)

IGNORE = -100  # a frame without a label (torch.nn.functional.cross_entropy's default ignore_index)
NUM_PHONES = len(PHONE_SET)  # the classes of the phone loss: the CMU phones and silence


class PhoneLabels:
    """The phone segments of the aligned utterances of a corpus, held as flat arrays.

    Args:
        folders: ``vqaudio align`` output folders.
        ids: the training corpus's utterance ids, in the order of ``RandomCrops`` (its ``ids``).
    Raises:
        DataError: a folder is not an alignment folder, or none of its utterances is in the corpus.
    """

    def __init__(self, folders: Sequence[str | Path], ids: Sequence[str]) -> None:
        phone_index = {phone: index for index, phone in enumerate(PHONE_SET)}
        self.folders = [str(folder) for folder in folders]
        aligned: dict[str, tuple[list[float], list[int]]] = {}  # utterance id -> segment ends, phones
        source: dict[str, str] = {}  # utterance id -> its folder
        for folder in folders:
            for utt_id, segments in read_alignments(folder).segments.items():
                unknown = {s.phone for s in segments} - phone_index.keys()
                if unknown:
                    raise DataError(f"{folder}: utterance {utt_id} has unknown phones {sorted(unknown)}")
                aligned[utt_id] = ([s.end for s in segments], [phone_index[s.phone] for s in segments])
                source[utt_id] = str(folder)
        # row r of the corpus -> its segments' ends (seconds) and phones at [offsets[r], offsets[r + 1])
        rows: dict[int, tuple[list[float], list[int]]] = {}
        for row, utt_id in enumerate(ids):  # one pass; only the aligned ids are kept
            if utt_id in aligned:
                rows[row] = aligned[utt_id]
        matched = {source[ids[row]] for row in rows}
        for folder in self.folders:
            if folder not in matched:
                raise DataError(
                    f"{folder}: none of its aligned utterances is in the training data (utterances match by "
                    "id); add its manifest.tsv to --data"
                )
        log.info("phone labels: %d utterances of %s", len(rows), ", ".join(self.folders))
        counts = np.zeros(len(ids), dtype=np.int64)
        for row, (ends, _) in rows.items():
            counts[row] = len(ends)
        self._offsets = np.concatenate([[0], np.cumsum(counts)])
        self._ends = np.zeros(int(self._offsets[-1]), dtype=np.float64)
        self._phones = np.zeros(int(self._offsets[-1]), dtype=np.int64)
        for row, (ends, phones) in rows.items():
            begin = self._offsets[row]
            self._ends[begin : begin + len(ends)] = ends
            self._phones[begin : begin + len(ends)] = phones

    @property
    def num_labelled(self) -> int:
        """Utterances of the corpus with phone labels."""
        return int((np.diff(self._offsets) > 0).sum())

    def at(self, row: int, seconds: np.ndarray) -> np.ndarray:
        """Phone indices of utterance ``row`` at the times ``seconds`` (int64); ``IGNORE`` where it has no
        labels or a time lies outside it."""
        begin, end = self._offsets[row], self._offsets[row + 1]
        labels = np.full(seconds.shape, IGNORE, dtype=np.int64)
        if begin == end:
            return labels
        ends = self._ends[begin:end]
        segment = np.searchsorted(ends, seconds, side="right")
        inside = (seconds >= 0) & (segment < len(ends))
        labels[inside] = self._phones[begin:end][segment[inside]]
        return labels


class LabelledCrops(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Step -> (the crops of ``RandomCrops`` [batch, samples], their phone labels [batch, frames] int64).

    Args:
        crops: the training crops.
        labels: phone labels of (some of) their utterances.
        hop_length: samples per token frame at the crops' rate.
    """

    def __init__(self, crops: RandomCrops, labels: PhoneLabels, hop_length: int) -> None:
        self.crops = crops
        self.labels = labels
        self.hop_length = hop_length
        self.num_frames = math.ceil(crops.segment_samples / hop_length)
        # where each frame's centre lies in a crop at speed 1, in samples
        self._centres = (np.arange(self.num_frames) + 0.5) * hop_length

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch, sources = self.crops.read(step)
        labels = torch.full((self.crops.batch_size, self.num_frames), IGNORE, dtype=torch.int64)
        for row, ((index, start, speed, _), used) in enumerate(
            zip(self.crops.plan(step), sources, strict=True)
        ):
            if used != (index, start):  # skip_bad read another utterance: its phones are not these
                continue
            positions = self.frame_sources(start, speed)
            frame_labels = self.labels.at(index, positions / self.crops.sample_rate)
            frame_labels[positions >= self.crops.lengths[index]] = IGNORE  # the zero padding
            labels[row] = torch.from_numpy(frame_labels)
        return batch, labels

    def frame_sources(self, start: int, speed: float) -> np.ndarray:
        """[frames] the utterance sample (model rate) each frame centre of a crop read from ``start`` at
        ``speed`` came from. With augmentation the crop is read with margins and resampled
        (``vqaudio.data.augment.perturb``): output sample j is source sample ``start + (round(EDGE / speed) + j)
        * speed``."""
        if self.crops.augmentation is None:
            return start + self._centres
        return start + (round(EDGE_SAMPLES / speed) + self._centres) * speed
