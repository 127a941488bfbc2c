"""The egs/ recipes: option parsing, stage sentinels, the mini corpus, the whole mini pipeline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vqaudio.config import Config, PriorRunConfig, load_yaml
from vqaudio.data import load_corpus

REPO = Path(__file__).resolve().parents[1]
RECIPES = ["mini", "librispeech", "fillets", "pocketsphinx"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the recipes are bash scripts")


def run_recipe(name: str, *args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "VQAUDIO": f"{sys.executable} -m vqaudio.cli.main",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
    }
    return subprocess.run(
        ["bash", str(REPO / "egs" / name / "run.sh"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_parses_help_and_rejects_unknown_options(name: str, tmp_path: Path) -> None:
    script = REPO / "egs" / name / "run.sh"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    usage = run_recipe(name, "--help", cwd=tmp_path)
    assert usage.returncode == 0 and "--stage" in usage.stdout and "Stages" in usage.stdout
    bad = run_recipe(name, "--no-such-option", "1", cwd=tmp_path)
    assert bad.returncode != 0 and "unknown option --no-such-option" in bad.stderr


def test_mini_configs_load_strictly() -> None:
    prior = load_yaml(REPO / "egs" / "mini" / "conf" / "prior_tiny.yaml", PriorRunConfig)
    assert prior.train.max_steps <= 100
    tiny = REPO / "recipes" / "tiny.yaml"
    if tiny.exists():
        load_yaml(tiny, Config)


def test_mini_stage0_holds_out_whole_speakers_and_is_skipped_when_done(tmp_path: Path) -> None:
    args = ("--stop-stage", "0", "--speakers", "5", "--sentences", "2")
    first = run_recipe("mini", *args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    splits = {
        split: load_corpus(tmp_path / f"data/mini/manifest.{split}.tsv") for split in ("train", "dev", "test")
    }
    speakers = {split: {utt.speaker for utt in corpus} for split, corpus in splits.items()}
    assert [len(speakers[split]) for split in ("train", "dev", "test")] == [3, 1, 1]
    assert not (speakers["train"] & (speakers["dev"] | speakers["test"])) and not (
        speakers["dev"] & speakers["test"]
    )
    assert all(utt.text for corpus in splits.values() for utt in corpus)
    assert (tmp_path / "data/mini/.stage0.done").is_file()
    again = run_recipe("mini", *args, cwd=tmp_path)
    assert again.returncode == 0 and "already done" in again.stderr


@pytest.mark.slow
def test_mini_recipe_runs_end_to_end(tmp_path: Path) -> None:
    """Every stage: data, codec training, tokenization, evaluation, prior training + evaluation, sampling."""
    result = run_recipe("mini", "--max-steps", "40", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    exp = tmp_path / "exp" / "mini"
    assert (exp / "codec").exists()
    for split in ("train", "dev", "test"):
        assert (exp / "tokens" / f"{split}.npy").is_file()
    assert (exp / "report").exists() and any((exp / "report").iterdir())
    prior_eval = json.loads((exp / "prior_eval.json").read_text())
    report = (exp / "report" / "report.md").read_text()
    assert "## Token prior" in report and "bigram" in report.split("## Token prior")[1]
    assert {"bits_per_token", "bigram_bits_per_token"} <= set(prior_eval)
    assert len(list((exp / "samples").glob("*.wav"))) == 4
    for number in range(6):
        assert (exp if number else tmp_path / "data" / "mini").joinpath(f".stage{number}.done").is_file()
    rerun = run_recipe("mini", cwd=tmp_path, timeout=120)
    assert rerun.returncode == 0 and rerun.stderr.count("already done") == 6


def train_codec_stages(tmp_path: Path, finetune: str, *overrides: str) -> tuple[int, str, list[list[str]]]:
    """Run lib.sh's stage_train_codec in tmp_path with a fake vqaudio that records its calls.

    Returns the exit status, stderr and each call's words; the recipes and manifests are empty files.
    """
    for name in ("base.yaml", "two.yaml", "three.yaml", "train.tsv", "dev.tsv"):
        (tmp_path / name).touch()
    calls = tmp_path / "calls.txt"
    script = f"""
source {REPO / "egs" / "common" / "lib.sh"}
fake() {{ echo "$*" >> {calls}; }}
vq=(fake); exp=exp; recipe=base.yaml; finetune_recipe='{finetune}'
train_manifest=train.tsv; dev_manifest=dev.tsv; codec_overrides=({" ".join(overrides)})
stage_train_codec
"""
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    lines = calls.read_text().splitlines() if calls.exists() else []
    return result.returncode, result.stderr, [line.split() for line in lines]


@pytest.mark.parametrize(
    ("finetune", "expected"),
    [
        ("", [("base.yaml", None, "codec")]),
        (
            "two.yaml,three.yaml",
            [
                ("base.yaml", None, "codec_base"),
                ("two.yaml", "codec_base", "codec_two"),
                ("three.yaml", "codec_two", "codec"),
            ],
        ),
    ],
)
def test_codec_stages_chain_each_from_the_one_before(
    finetune: str, expected: list[tuple[str, str | None, str]], tmp_path: Path
) -> None:
    status, stderr, calls = train_codec_stages(tmp_path, finetune, "--set", "train.max_steps=5")
    assert status == 0, stderr
    runs = []
    for words in calls:
        init = words[words.index("--init-from") + 1].removeprefix("exp/") if "--init-from" in words else None
        runs.append((words[1], init, words[words.index("--out") + 1].removeprefix("exp/")))
        assert ("train.max_steps=5" in words) == (init is None)  # --set applies to the first stage only
    assert runs == expected


def test_codec_stages_stop_on_a_missing_recipe(tmp_path: Path) -> None:
    status, stderr, calls = train_codec_stages(tmp_path, "two.yaml,missing.yaml")
    assert status != 0 and "missing missing.yaml" in stderr
    assert not calls  # checked before the first (hours-long) stage starts


@pytest.mark.parametrize(("codec_manifest", "train_source"), [("", "train.tsv"), ("plus.tsv", "plus.tsv")])
def test_the_train_tokens_are_of_the_codecs_training_data(
    codec_manifest: str, train_source: str, tmp_path: Path
) -> None:
    """Stage 2 tokenizes the codec's training manifest as the train split (the prior learns from all of it)."""
    for name in ("train.tsv", "plus.tsv", "dev.tsv", "test.tsv"):
        (tmp_path / name).touch()
    (tmp_path / "exp" / "codec").mkdir(parents=True)
    calls = tmp_path / "calls.txt"
    script = f"""
source {REPO / "egs" / "common" / "lib.sh"}
fake() {{ echo "$*" >> {calls}; }}
vq=(fake); exp=exp; codec_manifest='{codec_manifest}'
train_manifest=train.tsv; dev_manifest=dev.tsv; test_manifest=test.tsv
stage_tokenize
"""
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    sources = {words[2]: words[1] for words in (line.split() for line in calls.read_text().splitlines())}
    assert sources == {"exp/tokens/dev.npy": "dev.tsv", "exp/tokens/test.npy": "test.tsv",
                       "exp/tokens/train.npy": train_source}  # fmt: skip
