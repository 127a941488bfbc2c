"""The phonetic probe (vqaudio.evaluation.phonetic_probe, `vqaudio probe`, `vqaudio eval --probe`): the measures
on cases with known answers, the baselines, and the commands on a tiny model and a hand-made alignment."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import write_alignment_folder

from vqaudio.errors import DataError
from vqaudio.evaluation.phone_alignment import PHONE_SET, SILENCE
from vqaudio.evaluation.phonetic_probe import (
    code_scores,
    contingency,
    fit_kmeans,
    heldout_phone_purity,
    kmeans,
    linear_probe,
    mean_run_length,
    purity_and_pnmi,
    split_utterances,
    utterance_folds,
)


# --------------------------------------------------------------------------------------------------
# Purity, PNMI, run lengths
# --------------------------------------------------------------------------------------------------
def test_purities_and_pnmi_of_a_hand_computed_table() -> None:
    phones = np.array([0, 0, 0, 1, 1, 2])
    codes = np.array([0, 0, 1, 1, 1, 1])
    counts = contingency(phones, codes, 3, 2)
    assert counts.tolist() == [[2, 1], [0, 2], [0, 1]]
    phone_purity, code_purity, pnmi = purity_and_pnmi(counts)
    # code 0 -> phone 0 (2 of 2 frames), code 1 -> phone 1 (2 of 4): 4 of 6 frames read right
    assert phone_purity == pytest.approx(4 / 6)
    # phone 0's best code holds 2 of its 3 frames, phone 1's 2 of 2, phone 2's 1 of 1
    assert code_purity == pytest.approx(5 / 6)
    # I = 1/3 ln(2) + 1/6 ln(1/2) + 1/3 ln(3/2) + 1/6 ln(3/2); H = entropy of (1/2, 1/3, 1/6)
    mutual = math.log(2) / 6 + math.log(1.5) / 2
    phone_entropy = -(0.5 * math.log(0.5) + math.log(1 / 3) / 3 + math.log(1 / 6) / 6)
    assert pnmi == pytest.approx(mutual / phone_entropy)


def test_pnmi_is_one_for_a_bijection_zero_for_a_constant_and_near_zero_for_random_codes() -> None:
    rng = np.random.default_rng(0)
    phones = rng.integers(10, size=200_000)
    relabelled = (phones * 7 + 3) % 10  # a bijection of the phones
    assert purity_and_pnmi(contingency(phones, relabelled, 10, 10)) == pytest.approx((1.0, 1.0, 1.0))
    phone_purity, _, pnmi = purity_and_pnmi(contingency(phones, np.zeros_like(phones), 10, 1))
    assert pnmi == 0.0 and phone_purity == pytest.approx(np.bincount(phones).max() / phones.size)
    _, _, random_pnmi = purity_and_pnmi(contingency(phones, rng.integers(8, size=phones.size), 10, 8))
    assert 0 <= random_pnmi < 0.005  # plug-in bias: about (K - 1)(Y - 1) / 2N nats over H(y)
    # the same random codes with K large against the frames: the plug-in estimate is far from 0
    few = phones[:2000]
    _, _, biased = purity_and_pnmi(contingency(few, rng.integers(1024, size=few.size), 10, 1024))
    assert biased > 0.4
    assert math.isnan(purity_and_pnmi(contingency(np.zeros(5, int), np.arange(5), 1, 5))[2])
    with pytest.raises(ValueError, match="0..9"):
        contingency(np.array([10]), np.array([0]), 10, 1)


def test_run_length_and_deduplicated_rate_of_a_hand_example() -> None:
    codes = np.array([1, 1, 2, 2, 2, 3, 3, 3, 4])
    # utterance 1 = 1 1 2 2 2 3 (3 runs); utterance 2 = 3 3 4 (2 runs: the 3 does not continue across)
    assert mean_run_length(codes, [6, 3]) == (9 / 5, 5)
    assert mean_run_length(codes, [9]) == (9 / 4, 4)
    phones = np.zeros(9, dtype=np.int64)
    scores = code_scores("x", "codebook", codes, phones, [6, 3], 5, frame_rate=50.0)
    assert scores.mean_run_length == pytest.approx(1.8) and scores.dedup_rate == pytest.approx(50 / 1.8)
    assert scores.used_codes == 4 and scores.num_codes == 5
    with pytest.raises(ValueError, match="lengths sum"):
        mean_run_length(codes, [5, 3])


def test_heldout_purity_reads_codes_by_the_other_folds() -> None:
    phones = np.array([0, 0, 1, 1, 0, 1, 1, 1])
    codes = np.array([5, 5, 6, 6, 5, 6, 5, 7])
    folds = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    # fold 0 read by fold 1: code 5 -> phone 0 (a 1-1 tie: the lower phone), code 6 -> phone 1: 4 of 4 right
    # fold 1 read by fold 0: 5 -> 0 (right, wrong), 6 -> 1 (right); 7 unseen -> fold 0's most frequent phone, 0
    # (a 2-2 tie: the lower phone), wrong: 2 of 4
    assert heldout_phone_purity(phones, codes, folds, 2, 8) == pytest.approx(6 / 8)
    rng = np.random.default_rng(1)
    many_phones = rng.integers(10, size=50_000)
    shares = np.bincount(many_phones) / many_phones.size
    random_codes = rng.integers(16, size=many_phones.size)
    folds = np.repeat(np.arange(5), 10_000)
    assert heldout_phone_purity(many_phones, random_codes, folds, 10, 16) <= shares.max() + 0.01
    assert heldout_phone_purity(many_phones, many_phones, folds, 10, 10) == 1.0


def test_utterance_folds_and_split_are_seeded_and_whole() -> None:
    folds = utterance_folds(12, 5, seed=3)
    assert sorted(np.bincount(folds).tolist()) == [2, 2, 2, 3, 3]
    assert np.array_equal(folds, utterance_folds(12, 5, seed=3))
    assert sorted(utterance_folds(3, 5, seed=0).tolist()) == [0, 1, 2]
    test = split_utterances(10, 0.2, seed=0)
    assert test.sum() == 2 and np.array_equal(test, split_utterances(10, 0.2, seed=0))
    assert split_utterances(2, 0.9, seed=0).sum() == 1  # at most all but one
    with pytest.raises(ValueError, match="at least 2"):
        split_utterances(1, 0.2, seed=0)


# --------------------------------------------------------------------------------------------------
# The baselines' machinery
# --------------------------------------------------------------------------------------------------
def test_kmeans_is_deterministic_and_finds_separated_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=np.float32)
    truth = rng.integers(4, size=400)
    points = centres[truth] + rng.normal(scale=0.5, size=(400, 2)).astype(np.float32)
    found = kmeans(points, 4, seed=7)
    assert np.array_equal(found, kmeans(points, 4, seed=7))
    # a relabelling of the truth: PNMI 1
    assert purity_and_pnmi(contingency(truth, found, 4, 4))[2] == pytest.approx(1.0)
    assert len(np.unique(kmeans(points, 50, seed=1))) == 50
    with pytest.raises(ValueError, match="K <= N"):
        kmeans(points[:3], 4)


def test_kmeans_centroids_learnt_on_other_points_label_new_ones() -> None:
    import torch

    from vqaudio.codec.quantization.vq import nearest_codes

    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=np.float32)
    fit_truth, probe_truth = rng.integers(4, size=400), rng.integers(4, size=300)
    fit_points = centres[fit_truth] + rng.normal(scale=0.5, size=(400, 2)).astype(np.float32)
    probe_points = centres[probe_truth] + rng.normal(scale=0.5, size=(300, 2)).astype(np.float32)
    centroids, clusters = fit_kmeans(fit_points, 4, seed=3)
    assert centroids.shape == (4, 2) and np.array_equal(clusters, kmeans(fit_points, 4, seed=3))
    # converged: every fit point's nearest centroid is its own cluster
    assert np.array_equal(
        nearest_codes(torch.as_tensor(fit_points), torch.as_tensor(centroids)).numpy(), clusters
    )
    units = nearest_codes(torch.as_tensor(probe_points), torch.as_tensor(centroids)).numpy()
    assert purity_and_pnmi(contingency(probe_truth, units, 4, 4))[2] == pytest.approx(1.0)


def test_linear_probe_separates_a_linear_problem_and_fails_on_noise() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)  # four classes, linearly separable
    train, test = linear_probe(x[:500], y[:500], x[500:], y[500:], num_classes=4, steps=300)
    assert train > 0.95 and test > 0.9
    noise = rng.integers(4, size=600)
    _, chance = linear_probe(x[:500], noise[:500], x[500:], noise[500:], num_classes=4, steps=300)
    assert chance < 0.45


# --------------------------------------------------------------------------------------------------
# The commands, on a tiny model and a hand-made alignment folder
# --------------------------------------------------------------------------------------------------
PHONES = ("AA", "S", "M", "IY")


def aligned_folder(tmp_path: Path, speech, write_audio) -> Path:  # type: ignore[no-untyped-def]
    """Five 1.2 s utterances of speech-like audio, 'aligned' by hand: 0.2 s of silence, then phones of
    0.1-0.3 s cycling through PHONES, then silence."""
    manifest, phones = [], []
    for index in range(5):
        path = write_audio(tmp_path / "audio" / f"u{index}.wav", speech(19200, seed=index))
        manifest.append(f"u{index}\t{path}\t19200\t16000\t\tsome words")
        edges = [0.0, 0.2, 0.4, 0.5, 0.8, 0.9, 1.0, 1.2]
        labels = [SILENCE, *(PHONES[(index + k) % 4] for k in range(5)), SILENCE]
        phones += [
            f"u{index}\t{start:g}\t{end:g}\t{label}\tw"
            for start, end, label in zip(edges[:-1], edges[1:], labels, strict=True)
        ]
    return write_alignment_folder(tmp_path / "aligned", manifest, phones)


def test_probe_command_writes_the_report(
    tmp_path: Path, tiny_model_dir: Path, speech, write_audio, run
) -> None:  # type: ignore[no-untyped-def]
    from conftest import one_line_error

    folder = aligned_folder(tmp_path, speech, write_audio)
    out = tmp_path / "probe"
    base = ["probe", folder, "--model", tiny_model_dir, "--no-progress", "--threads", "1"]
    args = [*base, "--out", out]
    status, stdout, err = run(*args, "--kmeans-k", "16,4")
    assert status == 0, err
    assert "First codebook: PNMI" in stdout and "| codebook 3 |" in stdout
    assert sorted(path.name for path in out.iterdir()) == ["probe.json", "probe.md", "probe.png"]
    report = json.loads((out / "probe.json").read_text())
    assert report["format"] == "vqaudio-phonetic-probe" and report["aligner"] == "by hand"
    assert (report["utterances"], report["frames"]) == (5, 5 * 60)  # 1.2 s at 50 frames/s
    names = [row["name"] for row in report["codes"]]
    assert names == [
        "phones",
        "codebook 1",
        "codebook 2",
        "codebook 3",
        "k-means log-mel, K=16",
        "k-means log-mel, K=4",
        "random, K=16",
        "random, K=4",
    ]  # the tiny model has no pitch row
    phones_row = report["codes"][0]
    # per utterance: SIL 10 frames, phones of 10, 5, 15, 5, 5 frames (no two alike in a row), SIL 10 frames
    assert phones_row["pnmi"] == pytest.approx(1.0) and phones_row["mean_run_length"] == pytest.approx(60 / 7)
    # utterance u's phones are PHONES[u % 4], [u + 1], [u + 2], [u + 3], [u]: AA gets 15 + 5 + 15 + 5 + 15
    assert report["phone_counts"] == {"AA": 55, "S": 45, "M": 55, "IY": 45, SILENCE: 100}
    for row in report["codes"][1:]:
        assert 0 <= row["pnmi"] <= 1 and 0 <= row["heldout_phone_purity"] <= 1 and row["mean_run_length"] >= 1
    assert report["split"]["test_utterances"] == 1 and report["split"]["train_frames"] == 240
    assert [probe["name"].split(" ")[0] for probe in report["linear_probes"]] == [
        "encoder",
        "quantized",
        "quantized",
        "log-mel",
        "log-mel,",
    ]
    assert "| k-means log-mel, K=4 | 4 |" in (out / "probe.md").read_text()
    status, _, err = run(*args)
    assert status == 2 and "--overwrite" in err  # a usage error
    status, _, err = run(*base, "--out", tmp_path / "y", "--kmeans-k", "a,b")
    assert status == 2 and "positive integers" in err
    one_line_error(run("probe", folder / "manifest.tsv", "--out", tmp_path / "z"), "vqaudio align")
    assert not (tmp_path / "y").exists() and not (tmp_path / "z").exists()
    status, stdout, err = run(*base, "--out", tmp_path / "x", "--kmeans-k", "400,8")
    assert status == 0, err  # K=400 > 300 frames: that k-means is left out, with a note
    rows = [row["name"] for row in json.loads((tmp_path / "x" / "probe.json").read_text())["codes"]]
    assert rows[-3:] == ["k-means log-mel, K=8", "random, K=400", "random, K=8"]
    assert "K=400 needs at least K frames" in stdout


def test_probe_kmeans_fit_on_other_speech(
    tmp_path: Path, tiny_model_dir: Path, speech, write_audio, run
) -> None:  # type: ignore[no-untyped-def]
    from conftest import one_line_error

    folder = aligned_folder(tmp_path, speech, write_audio)
    other = tmp_path / "other"
    for index in range(3):  # 1 s each: 50 frames, as many as the tokens
        write_audio(other / f"o{index}.wav", speech(16000, seed=10 + index))
    base = [
        "probe",
        folder,
        "--model",
        tiny_model_dir,
        "--no-progress",
        "--threads",
        "1",
        "--kmeans-k",
        "16,4",
    ]
    status, stdout, err = run(*base, "--out", tmp_path / "a", "--kmeans-fit", other)
    assert status == 0, err
    report = json.loads((tmp_path / "a" / "probe.json").read_text())
    assert report["kmeans_fit"] == {"source": str(other), "utterances": 3, "frames": 150}
    rows = {row["name"]: row for row in report["codes"]}
    for k in (16, 4):
        fitted, elsewhere = rows[f"k-means log-mel, K={k}"], rows[f"k-means log-mel of other speech, K={k}"]
        assert elsewhere["kind"] == "kmeans" and 1 <= elsewhere["used_codes"] <= k
        assert 0 <= elsewhere["pnmi"] <= 1 and elsewhere["pnmi"] != fitted["pnmi"]
    assert "k-means on log-mel of other speech with the same K" in stdout
    assert f"fit on `{other}`: 3 utterances, 150 frames" in (tmp_path / "a" / "probe.md").read_text()
    # a frame budget cuts the speech read; a K above it is left out with a note
    status, stdout, err = run(
        *base[:-1], "40,4", "--out", tmp_path / "b", "--kmeans-fit", other, "--kmeans-fit-frames", "30"
    )
    assert status == 0, err
    report = json.loads((tmp_path / "b" / "probe.json").read_text())
    assert report["kmeans_fit"]["frames"] == 30 and report["kmeans_fit"]["utterances"] == 1
    names = [row["name"] for row in report["codes"]]
    assert (
        "k-means log-mel of other speech, K=4" in names
        and "k-means log-mel of other speech, K=40" not in names
    )
    assert "K=40 needs at least K frames and --kmeans-fit gave 30" in stdout
    # the probed speech itself is not "other speech"; a missing corpus fails before any work
    one_line_error(
        run(*base, "--out", tmp_path / "c", "--kmeans-fit", folder / "manifest.tsv"), "--kmeans-fit"
    )
    one_line_error(run(*base, "--out", tmp_path / "d", "--kmeans-fit", tmp_path / "nothing"), "no such file")
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_probe_hold_measures_the_held_codes(
    tmp_path: Path, tiny_model_dir: Path, speech, write_audio, run
) -> None:  # type: ignore[no-untyped-def]
    folder = aligned_folder(tmp_path, speech, write_audio)
    base = ["probe", folder, "--model", tiny_model_dir, "--no-progress", "--threads", "1", "--kmeans-k", "4"]
    reports = {}
    for hold in ("0", "4"):
        status, _, err = run(*base, "--out", tmp_path / hold, "--hold", hold)
        assert status == 0, err
        reports[hold] = json.loads((tmp_path / hold / "probe.json").read_text())
        assert reports[hold]["model"]["first_codebook_hold"] == float(hold)
    plain, held = (reports[hold]["codes"][1] for hold in ("0", "4"))  # codebook 1
    assert held["mean_run_length"] > plain["mean_run_length"]
    assert "first-codebook hold 4" in (tmp_path / "4" / "probe.md").read_text()


def test_eval_probe_adds_the_section_to_the_report(
    tmp_path: Path, tiny_model_dir: Path, speech, write_audio, run
) -> None:  # type: ignore[no-untyped-def]
    folder = aligned_folder(tmp_path, speech, write_audio)
    out = tmp_path / "report"
    fast = [
        "--no-baselines",
        "--no-voice",
        "--examples",
        "0",
        "--no-progress",
        "--threads",
        "1",
        "--n-q",
        "1",
    ]
    status, _, err = run(
        "eval", folder / "manifest.tsv", "--model", tiny_model_dir, "--out", out, *fast, "--probe", folder
    )
    assert status == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["phonetic_probe"]["frames"] == 300 and report["options"]["probe"] == str(folder)
    assert (
        report["plots"]["phonetic_probe"] == "phonetic_probe.png" and (out / "phonetic_probe.png").is_file()
    )
    assert "## Phonetic probe" in (out / "report.md").read_text()
    status, _, err = run(
        "eval",
        folder / "manifest.tsv",
        "--model",
        tiny_model_dir,
        "--out",
        tmp_path / "r2",
        *fast,
        "--probe",
        tmp_path,
    )
    assert status == 1 and "not a phone alignment folder" in err and not (tmp_path / "r2").exists()


def test_probe_needs_two_utterances(tmp_path: Path, tiny_tokenizer, speech, write_audio) -> None:  # type: ignore[no-untyped-def]
    from vqaudio.evaluation.phonetic_probe import ProbeOptions, run_probe

    folder = aligned_folder(tmp_path, speech, write_audio)
    lines = (folder / "manifest.tsv").read_text().splitlines()
    (folder / "manifest.tsv").write_text("\n".join(lines[:2]) + "\n")
    phones = (folder / "phones.tsv").read_text().splitlines()
    (folder / "phones.tsv").write_text(
        "\n".join(line for line in phones if not line.startswith(("u1", "u2", "u3", "u4"))) + "\n"
    )
    with pytest.raises(DataError, match="at least 2 aligned utterances"):
        run_probe(folder, tiny_tokenizer, ProbeOptions(kmeans_k=(4,), progress=False))
    assert len(PHONE_SET) == 40
