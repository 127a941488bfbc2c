"""The training data path at scale: crops through DataLoader workers and DDP ranks, validation shards."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import speech_like
from torch.utils.data import DataLoader

from vqaudio.codec.validation import ValidationSet
from vqaudio.data.crops import PackedAudio, PackedStrings, RandomCrops
from vqaudio.data.utterance import Utterance
from vqaudio.training.distributed import DistributedContext

RATE = 16000


def corpus(folder: Path, count: int) -> list[Utterance]:
    """``count`` files of 0.3-0.7 s, with their header lengths (as a manifest gives them)."""
    folder.mkdir(parents=True, exist_ok=True)
    utterances = []
    for index in range(count):
        audio = speech_like(RATE * (3 + index % 5) // 10, seed=index)
        path = folder / f"u{index:02d}.wav"
        sf.write(str(path), audio, RATE, subtype="PCM_16")
        utterances.append(Utterance(f"u{index:02d}", path, len(audio), RATE))
    return utterances


def batches_through_workers(crops: RandomCrops, steps: range, workers: int) -> list[torch.Tensor]:
    loader = DataLoader(crops, batch_size=None, sampler=steps, num_workers=workers, prefetch_factor=2)
    return list(loader)


@pytest.mark.parametrize("cache", [False, True])
def test_ranks_and_workers_draw_each_step_once_and_never_the_same_crops(tmp_path: Path, cache: bool) -> None:
    """2 ranks x 2 workers: every (rank, step) batch arrives once, in step order, equal to the in-process
    batch (so the crops do not depend on which worker made them), and no two batches are the same."""
    utterances = corpus(tmp_path, 6)
    seen: list[torch.Tensor] = []
    for rank in (0, 1):
        crops = RandomCrops(utterances, RATE, 1600, batch_size=3, seed=7, rank=rank, cache=cache)
        got = batches_through_workers(crops, range(8), workers=2)
        assert len(got) == 8
        assert all(torch.equal(batch, crops[step]) for step, batch in enumerate(got))
        seen.extend(got)
    for first in range(len(seen)):
        for second in range(first + 1, len(seen)):
            assert not torch.equal(seen[first], seen[second]), (first, second)


def test_resuming_at_a_step_with_workers_gives_the_rest_of_the_uninterrupted_run(tmp_path: Path) -> None:
    crops = RandomCrops(corpus(tmp_path, 5), RATE, 1600, batch_size=2, seed=3, rank=1)
    whole = batches_through_workers(crops, range(10), workers=2)
    resumed = batches_through_workers(crops, range(6, 10), workers=1)  # other workers, later start
    assert all(torch.equal(a, b) for a, b in zip(resumed, whole[6:], strict=True))


def test_crops_keep_no_python_object_per_utterance(tmp_path: Path) -> None:
    """A million-file corpus must not live as a million objects in every forked worker (their reference
    counts would copy the pages): the dataset's object count does not grow with the corpus."""
    path = tmp_path / "x.wav"
    sf.write(str(path), speech_like(RATE // 2), RATE)

    def objects_kept(count: int) -> int:
        utterances = [Utterance(f"u{index:06d}", path, RATE // 2, RATE) for index in range(count)]
        gc.collect()
        before = len(gc.get_objects())
        crops = RandomCrops(utterances, RATE, 1600, batch_size=2, seed=0)
        del utterances
        gc.collect()
        kept = len(gc.get_objects()) - before
        assert crops.num_utterances == count and crops.paths[count - 1] == str(path)
        return kept

    assert objects_kept(20_000) <= objects_kept(200) + 10


def test_packed_strings_and_audio_return_what_was_packed() -> None:
    texts = ["a.wav", "", "dir/é ü.flac", "bad-\udcff-bytes.wav", "z" * 300]
    packed = PackedStrings(texts)
    assert len(packed) == 5 and [packed[i] for i in range(5)] == texts
    assert packed[-1] == texts[-1] and packed[1:3] == texts[1:3]
    with pytest.raises(IndexError):
        packed[5]
    clips = [np.arange(n, dtype=np.int16) for n in (5, 0, 3)]
    audio = PackedAudio(clips)
    assert audio.lengths.tolist() == [5, 0, 3]
    assert audio.window(0, 2, 10).tolist() == [2, 3, 4]  # clipped at the clip's end, not the next clip's
    assert audio.window(2, 1, 1).tolist() == [1] and audio.window(1, 0, 4).tolist() == []


def test_each_rank_decodes_only_its_share_of_the_validation_set(tmp_path: Path) -> None:
    utterances = corpus(tmp_path, 7)
    shards = [
        ValidationSet(utterances, RATE, 2, 2 * RATE, context=DistributedContext(rank, 3, rank))
        for rank in range(3)
    ]
    whole = ValidationSet(utterances, RATE, 2, 2 * RATE)
    assert all(shard.batches == whole.batches for shard in shards)  # one plan, from the header lengths
    own = [index for shard in shards for batch in shard.own_batches for index in batch]
    assert sorted(own) == list(range(7))  # every utterance validated once, by one rank
    for shard in shards:
        decoded = set(shard.audio)
        assert decoded == {index for batch in shard.own_batches for index in batch}
        assert len(shard) == 7 and shard.seconds == pytest.approx(whole.seconds)
    wav, lengths = shards[0].batch(shards[0].own_batches[0])
    index = shards[0].own_batches[0][0]
    assert torch.equal(wav[0, : lengths[0]], whole.audio[index])
