"""The phone loss (loss.phone_weight): crop labels, training, resume, and what stays out of the release model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import write_alignment_folder
from safetensors.torch import load_file
from test_training import tiny_training_config

from vqaudio.cli.main import main
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.codec.training import StepResult, Trainer, _Window, train_tokenizer
from vqaudio.config import ConfigError
from vqaudio.data.augment import Augmentation
from vqaudio.data.corpus import Utterance, fill_headers, load_corpus
from vqaudio.data.crops import RandomCrops
from vqaudio.data.phone_labels import IGNORE, LabelledCrops, PhoneLabels
from vqaudio.errors import DataError
from vqaudio.evaluation.phone_alignment import PHONE_SET, SILENCE
from vqaudio.io.model_file import WEIGHTS_FILE
from vqaudio.training.checkpoint import CHECKPOINT_FILE, load_checkpoint

RATE = 16000
HOP = 320  # tiny.yaml's token frame
# each "phone" is a sound of its own: three tones and a band of noise; silence between words
SOUNDS = {"AA": 300.0, "IY": 1000.0, "S": None, "M": 2500.0}


def sound(phone: str, start: float, end: float, rng: np.random.Generator) -> np.ndarray:
    """The samples of ``phone`` from ``start`` to ``end`` seconds."""
    t = np.arange(round(end * RATE) - round(start * RATE)) / RATE
    if phone == SILENCE:
        return 1e-3 * rng.standard_normal(len(t))
    frequency = SOUNDS[phone]
    if frequency is None:  # a high noise band
        noise = rng.standard_normal(len(t))
        return 0.3 * np.diff(noise, prepend=0.0) / 2
    return 0.4 * np.sin(2 * np.pi * frequency * (1 + 0.02 * rng.standard_normal()) * t)


def aligned_corpus(
    folder: Path, count: int, seconds: float = 1.2, seed: int = 0, prefix: str = "u"
) -> tuple[Path, Path]:
    """``count`` utterances of random phone sequences (segments of 0.08-0.24 s on a 10 ms grid) with their
    exact alignment; returns the audio folder and the alignment folder."""
    rng = np.random.default_rng(seed)
    audio = folder / "audio"
    audio.mkdir(parents=True)
    manifest, rows = [], []
    choices = [*SOUNDS, SILENCE]
    for index in range(count):
        edges, labels = [0.0], []
        while edges[-1] < seconds - 1e-9:
            edges.append(min(seconds, edges[-1] + rng.integers(8, 25) / 100))
            labels.append(str(rng.choice(choices)))
        signal = np.concatenate(
            [
                sound(phone, start, end, rng)
                for phone, start, end in zip(labels, edges[:-1], edges[1:], strict=True)
            ]
        )
        path = audio / f"{prefix}{index:02d}.wav"
        sf.write(str(path), signal.astype(np.float32), RATE, subtype="PCM_16")
        manifest.append(f"{prefix}{index:02d}\t{path}\t{len(signal)}\t{RATE}\t\tw")
        rows += [
            f"{prefix}{index:02d}\t{start:.2f}\t{end:.2f}\t{phone}\tw"
            for phone, start, end in zip(labels, edges[:-1], edges[1:], strict=True)
        ]
    return audio, write_alignment_folder(folder / "aligned", manifest, rows)


def utterances(audio: Path) -> list[Utterance]:
    return fill_headers(load_corpus(audio), progress=False)


def phone_at(aligned: Path, utt_id: str, seconds: float) -> int:
    """The phone index at ``seconds`` by reading phones.tsv directly (the reference)."""
    for line in (aligned / "phones.tsv").read_text().splitlines()[1:]:
        name, start, end, phone, _ = line.split("\t")
        if name == utt_id and float(start) <= seconds < float(end):
            return PHONE_SET.index(phone)
    return IGNORE


RAMP = 2.0**-14  # a ramp's value per sample: its audio tells where in the file each crop sample came from


def ramp_corpus(folder: Path, count: int, seconds: float, prefix: str = "u") -> tuple[list[Utterance], Path]:
    """``aligned_corpus``'s alignment, with each file's audio replaced by a ramp (float WAV, exact)."""
    audio, aligned = aligned_corpus(folder, count, seconds=seconds, prefix=prefix)
    for path in sorted(audio.glob("*.wav")):
        length = sf.info(str(path)).frames
        sf.write(str(path), (np.arange(length) * RAMP).astype(np.float32), RATE, subtype="FLOAT")
    return utterances(audio), aligned


def boundaries(aligned: Path, utt_id: str) -> np.ndarray:
    rows = [line.split("\t") for line in (aligned / "phones.tsv").read_text().splitlines()[1:]]
    return np.array([float(row[2]) * RATE for row in rows if row[0] == utt_id])


@pytest.mark.parametrize(
    ("speed", "gain_db"), [((1.0, 1.0), (0.0, 0.0)), ((1.0, 1.0), (-6.0, -6.0)), ((0.8, 1.25), (-6.0, -6.0))]
)
def test_crop_labels_are_the_phones_where_each_frame_came_from(
    tmp_path: Path, speed: tuple[float, float], gain_db: tuple[float, float]
) -> None:
    """Each frame's label is the phone at the file position its centre sample was read from, as the audio of
    ramp files shows (through speed and gain perturbation, whose reading has margins); padding and unlabelled
    files are IGNORE."""
    corpus, aligned = ramp_corpus(tmp_path / "long", 4, seconds=1.7)  # crops start anywhere in these
    short, short_aligned = ramp_corpus(tmp_path / "short", 2, seconds=0.7, prefix="s")  # padded crops
    corpus += short
    unlabelled = tmp_path / "other.wav"  # in the corpus, not in the alignment
    sf.write(str(unlabelled), np.zeros(RATE, np.float32), RATE)
    corpus += fill_headers(load_corpus(unlabelled), progress=False)
    crops = RandomCrops(corpus, RATE, 16000, 6, seed=3, augmentation=Augmentation(speed, gain_db))
    labels = PhoneLabels([aligned, short_aligned], crops.ids)
    assert labels.num_labelled == 6
    dataset = LabelledCrops(crops, labels, HOP)
    gain = 10.0 ** (gain_db[0] / 20.0)
    centres = np.arange(50) * HOP + HOP // 2
    checked = padded = unlabelled_rows = 0
    for step in range(12):
        batch, frame_labels = dataset[step]
        assert torch.equal(batch, crops[step])  # the crops are RandomCrops' own
        assert frame_labels.shape == (6, 50) and frame_labels.dtype == torch.int64
        for row, (index, _, _, _) in enumerate(crops.plan(step)):
            utt_id = crops.ids[index]
            if utt_id == "other":
                assert (frame_labels[row] == IGNORE).all()
                unlabelled_rows += 1
                continue
            position = batch[row, centres].numpy() / gain / RAMP  # where in the file each centre came from
            folder = short_aligned if utt_id.startswith("s") else aligned
            edges = boundaries(folder, utt_id)
            for frame in range(50):
                if batch[row, centres[frame]] == 0:  # the zero padding after the file's end
                    assert int(frame_labels[row, frame]) == IGNORE
                    padded += 1
                elif np.abs(edges - position[frame]).min() > 2 and position[frame] < crops.lengths[index] - 2:
                    expected = phone_at(folder, utt_id, position[frame] / RATE)
                    assert int(frame_labels[row, frame]) == expected, (step, row, frame, position[frame])
                    checked += 1
        assert torch.equal(dataset[step][1], frame_labels)  # a function of the step
    assert checked > 500 and padded > 0 and unlabelled_rows > 0


def test_crops_that_skip_bad_took_elsewhere_are_unlabelled(tmp_path: Path) -> None:
    corpus, aligned = ramp_corpus(tmp_path, 3, seconds=1.2)
    (tmp_path / "audio" / "u01.wav").write_bytes(b"not audio")  # labelled, listed, undecodable
    crops = RandomCrops(corpus, RATE, 8000, 8, seed=0, skip_bad=True)
    dataset = LabelledCrops(crops, PhoneLabels([aligned], crops.ids), HOP)
    bad_rows = good_rows = 0
    for step in range(4):
        _, frame_labels = dataset[step]
        for row, (index, _, _, _) in enumerate(crops.plan(step)):
            if crops.ids[index] == "u01":
                assert (frame_labels[row] == IGNORE).all()
                bad_rows += 1
            else:
                assert (frame_labels[row] != IGNORE).any()
                good_rows += 1
    assert bad_rows and good_rows


def test_phone_labels_must_label_the_training_data(tmp_path: Path) -> None:
    audio, aligned = aligned_corpus(tmp_path, 2)
    with pytest.raises(DataError, match="none of its aligned utterances is in the training data"):
        PhoneLabels([aligned], ["a", "b"])
    with pytest.raises(DataError, match="vqaudio align"):
        PhoneLabels([audio], ["u00"])


def test_phone_loss_teaches_the_first_codebook_the_phones(tmp_path: Path) -> None:
    """60 steps of the tiny model: the phone head reading first-codebook vectors goes from chance to most
    frames right, and the loss falls by more than half."""
    audio, aligned = aligned_corpus(tmp_path, 12)
    config = tiny_training_config(**{"loss.phone_weight": 1.0, "train.max_steps": 60, "train.log_every": 10})
    train_tokenizer(
        config, utterances(audio), [], tmp_path / "run", progress=False, phone_alignments=[aligned]
    )
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [row for row in rows if "phone_accuracy" in row]
    assert len(train) == 6
    first, last = train[0], train[-1]
    assert last["phone"] < 0.5 * first["phone"], (first["phone"], last["phone"])
    assert last["phone_accuracy"] > 0.8 and first["phone_accuracy"] < 0.6, (first, last)


def test_phone_loss_resumes_exactly_and_stays_out_of_the_release_model(tmp_path: Path) -> None:
    audio, aligned = aligned_corpus(tmp_path, 6)
    corpus = utterances(audio)
    config = tiny_training_config(
        **{"loss.phone_weight": 1.0, "train.max_steps": 16, "train.checkpoint_every": 8}
    )
    whole = train_tokenizer(
        config, corpus, [], tmp_path / "whole", progress=False, phone_alignments=[aligned]
    )
    train_tokenizer(
        config, corpus, [], tmp_path / "parts", progress=False, phone_alignments=[aligned], until_step=8
    )
    parts = train_tokenizer(
        config, corpus, [], tmp_path / "parts", progress=False, phone_alignments=[aligned]
    )
    assert whole.step == parts.step == 16
    a = load_checkpoint(tmp_path / "whole" / CHECKPOINT_FILE)
    b = load_checkpoint(tmp_path / "parts" / CHECKPOINT_FILE)
    for name in ("model", "phone_head"):
        state_a = a[name] if name == "model" else a[name]["model"]
        state_b = b[name] if name == "model" else b[name]["model"]
        for key, value in state_a.items():
            assert torch.equal(value, state_b[key]), (name, key)
    # the release model is the tokenizer alone: tensors of the model, none of the phone head's
    plain = Trainer(tiny_training_config(), corpus, [], tmp_path / "plain", progress=False)
    plain.close()
    released = load_file(str(tmp_path / "whole" / WEIGHTS_FILE))
    assert set(released) <= set(plain.model.state_dict()) and not any("phone" in key for key in released)
    assert Tokenizer.load(tmp_path / "whole").config.loss.phone_weight == 1.0


def test_cli_names_the_missing_phone_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio, aligned = aligned_corpus(tmp_path, 2)
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml"
    args = ["train", str(recipe), "--data", str(audio), "--out", str(tmp_path / "run"), "--max-steps", "2"]
    code = main([*args, "--set", "loss.phone_weight=1", "--no-progress"])
    error = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and "--phones" in error[-1] and "loss.phone_weight" in error[-1], error


def test_the_phone_loss_reaches_the_encoder_through_the_first_codebook(tmp_path: Path) -> None:
    """With every other loss off, one step moves the encoder (straight through the first codebook) and leaves
    the decoder as it was."""
    audio, aligned = aligned_corpus(tmp_path, 4)
    silent = {
        name: 0.0
        for name in (
            "loss.waveform_l1_weight",
            "loss.stft_weight",
            "loss.mel_weight",
            "loss.quantizer_weight",
            "model.quantizer.usage_entropy_weight",
        )
    }
    config = tiny_training_config(**{**silent, "loss.phone_weight": 1.0, "train.warmup_steps": 0})
    trainer = Trainer(
        config, utterances(audio), [], tmp_path / "run", progress=False, phone_alignments=[aligned]
    )
    before = {name: value.detach().clone() for name, value in trainer.model.named_parameters()}
    batch, labels = trainer.batches[0]
    result = trainer.train_step(batch, labels)
    trainer.close()
    assert result.phone > 0 and result.phone_frames > 0
    moved = {name for name, value in trainer.model.named_parameters() if not torch.equal(value, before[name])}
    assert any(name.startswith("encoder.") for name in moved)
    assert not any(name.startswith("decoder.") for name in moved), sorted(moved)[:3]


def test_phone_metrics_average_over_the_steps_with_labels() -> None:
    """On a corpus mixing aligned and unaligned speech some steps have no labelled frame: the logged phone loss
    and accuracy are those of the steps that had some."""

    window = _Window(num_codebooks=2, codebook_size=4)
    zero = torch.zeros(2)
    for phone, correct, frames in ((2.0, 30, 40), (0.0, 0, 0), (1.0, 10, 40), (0.0, 0, 0)):
        result = StepResult(
            **dict.fromkeys(
                ("loss", "waveform_l1", "stft", "mel", "envelope", "quantizer", "pitch", "adversarial"), 1.0
            ),
            feature_matching=0.0,
            discriminator=0.0,
            phone=phone,
            phone_correct=correct,
            phone_frames=frames,
            commitment=zero,
            grad_norm=1.0,
            learning_rate=1e-3,
            codes=torch.zeros(1, 2, 5, dtype=torch.int64),
            reconstruction=torch.zeros(1, 10),
            target=torch.zeros(1, 10),
        )
        window.add(result, seconds=1.0, waited=0.0, audio_seconds=1.0)
    metrics = window.metrics(0.5)
    assert metrics["phone"] == pytest.approx(1.5) and metrics["phone_accuracy"] == pytest.approx(0.5)


def test_phone_loss_refuses_a_group_quantizer_and_a_run_without_labels(tmp_path: Path) -> None:
    audio, aligned = aligned_corpus(tmp_path, 2)
    group = tiny_training_config(**{"loss.phone_weight": 1.0, "model.quantizer.kind": "group"})
    with pytest.raises(ConfigError, match="needs model.quantizer.kind=residual"):
        Trainer(group, utterances(audio), [], tmp_path / "g", progress=False, phone_alignments=[aligned])
    unlabelled = tiny_training_config(**{"loss.phone_weight": 1.0})
    with pytest.raises(ConfigError, match="--phones"):
        Trainer(unlabelled, utterances(audio), [], tmp_path / "u", progress=False)
    assert not (tmp_path / "g").exists() and not (tmp_path / "u").exists()  # refused before any work
