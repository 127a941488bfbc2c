"""The training-run machinery both trainers share (vqaudio.training.run): run-folder rules, checkpoints on
SIGINT / SIGTERM (also with SIGINT ignored, as a non-interactive shell starts background jobs), resume.

The per-trainer behaviour (exact resume, metrics, release models) is tested in test_training.py (codec) and
test_prior.py (prior); here both trainers are driven the same way, through the command line, and the prior's
trainer runs data-parallel like the codec's (test_training.py::test_two_process_ddp_keeps_replicas_identical).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import join_cpu_process_group, speech_like
from test_prior import fast_train_config, pattern_corpus, token_meta, write_tokens

from vqaudio.cli.main import main
from vqaudio.prior import Prior
from vqaudio.prior.training import PriorTrainer, TokenSet, _training_data
from vqaudio.training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from vqaudio.training.distributed import shutdown_distributed
from vqaudio.training.logs import read_metrics
from vqaudio.training.run import RunFolder, TrainingRun

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def codec_command(tmp_path: Path, out: Path, max_steps: int) -> list[str]:
    """``vqaudio train`` of the tiny recipe on four short files, logging every step."""
    data = tmp_path / "wav"
    if not data.is_dir():
        data.mkdir()
        for index in range(4):
            sf.write(str(data / f"utt{index}.wav"), speech_like(8000, seed=index), 16000, subtype="PCM_16")
    args = ["train", str(RECIPES / "tiny.yaml"), "--data", str(data), "--out", str(out), "--no-progress"]
    args += ["--max-steps", str(max_steps), "--threads", "1"]
    for setting in (
        "batch_size=2",
        "segment_seconds=0.25",
        "log_every=1",
        "checkpoint_every=100000",
        "validate_every=100000",
        "num_validation_files=1",
    ):
        args += ["--set", f"train.{setting}"]
    return args


def prior_command(tmp_path: Path, out: Path, max_steps: int) -> list[str]:
    """``vqaudio prior train`` of the tiny recipe on a repeated pattern, logging every step."""
    tokens = tmp_path / "train.npy"
    if not tokens.is_file():
        write_tokens(tokens, pattern_corpus(), token_meta(num_codebooks=2))
    args = ["prior", "train", str(tokens), "--out", str(out), "--config", str(RECIPES / "prior_tiny.yaml")]
    args += ["--no-progress"]
    for setting in (
        f"max_steps={max_steps}",
        "log_every=1",
        "checkpoint_every=100000",
        "num_threads=1",
        "tensorboard=false",
        "holdout_fraction=0",
    ):
        args += ["--set", f"train.{setting}"]
    return args


def released_step(trainer: str, out: Path) -> int:
    if trainer == "codec":
        from vqaudio.codec.tokenizer import Tokenizer

        return int(Tokenizer.load(out).training["steps"])
    from vqaudio.prior import Prior

    return int(Prior.load(out).training["step"])


def wait_for_training_rows(process: subprocess.Popen[str], metrics: Path, count: int) -> None:
    """Until ``metrics`` holds ``count`` training rows (the process is killed if it ends or stalls first)."""
    started = time.monotonic()
    while sum("train" in (row.get("split"), row.get("kind")) for row in read_metrics(metrics)) < count:
        if process.poll() is not None or time.monotonic() - started > 120:
            process.kill()
            pytest.fail(f"training stopped or did not start: {process.communicate()[1]}")
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("trainer", ["codec", "prior"])
def test_a_signal_leaves_a_resumable_checkpoint(tmp_path: Path, trainer: str, signum: int) -> None:
    """Both trainers, both signals: the step finishes, a checkpoint is written, exit code 130, same message;
    the same command then resumes from that checkpoint."""
    out = tmp_path / "run"
    command_of = codec_command if trainer == "codec" else prior_command
    command = [sys.executable, "-m", "vqaudio.cli.main", *command_of(tmp_path, out, 100000)]

    def ignore_sigint() -> None:  # what a non-interactive shell does to a background job
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    with subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=ignore_sigint
    ) as process:
        wait_for_training_rows(process, out / "metrics.jsonl", 2)
        process.send_signal(signum)
        try:
            _, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 130, stderr
    assert "stopping after this step to write a checkpoint" in stderr
    assert "checkpoint written to" in stderr and "run the same command again to resume" in stderr
    step = int(load_checkpoint(out / CHECKPOINT_FILE)["step"])
    assert step >= 2 and released_step(trainer, out) == step
    assert max(row["step"] for row in read_metrics(out / "metrics.jsonl")) == step

    torch.set_num_threads(1)
    assert main(command_of(tmp_path, out, step + 1)) == 0
    assert int(load_checkpoint(out / CHECKPOINT_FILE)["step"]) == step + 1


def test_run_folder_refuses_to_replace_a_run_without_overwrite(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run", ("model.safetensors", "metrics.jsonl"), "{out}: {existing}; {why}")
    assert folder.open(resume=True, overwrite=False) is None and folder.out.is_dir()
    (folder.out / "metrics.jsonl").write_text("")
    with pytest.raises(FileExistsError, match=r"run: metrics.jsonl; there is no checkpoint.pt to resume"):
        folder.open(resume=True, overwrite=False)
    assert folder.open(resume=True, overwrite=True) is None and folder.existing() == []
    guarded = RunFolder(folder.out, ("model.safetensors", "metrics.jsonl"), "{out}", ["model.safetensors"])
    (folder.out / "metrics.jsonl").write_text("")
    assert guarded.open(resume=True, overwrite=False) is None and guarded.existing() == []  # stale logs go


def test_training_run_saves_once_per_step_and_not_during_an_update(tmp_path: Path) -> None:
    saved: list[int] = []
    run = TrainingRun(RunFolder(tmp_path, (), ""), lambda: saved.append(run.step), step=4, resumed=True)
    run.save()  # the checkpoint of step 4 is the one resumed from
    run.step += 1
    run.save()
    run.save()
    assert saved == [5] and run.due(5, 100) and run.due(3, 5) and not run.due(3, 100)
    run.step += 1
    with pytest.raises(KeyboardInterrupt), run.stoppable():
        raise KeyboardInterrupt
    assert saved == [5, 6]
    run.step += 1
    with pytest.raises(KeyboardInterrupt), run.stoppable(), run.updating():
        raise KeyboardInterrupt  # inside an optimizer update: the last checkpoint is kept
    assert saved == [5, 6]


# --------------------------------------------------------------------------------------------------
# The prior, data-parallel (gloo on the CPU, as torchrun sets it up)
# --------------------------------------------------------------------------------------------------
def _prior_ddp_worker(rank: int, world_size: int, port: int, folder: str) -> None:
    context = join_cpu_process_group(rank, world_size, port)
    corpus = {f"u{index}": np.random.default_rng(index).integers(0, 16, (2, 80)) for index in range(6)}
    config = fast_train_config(
        max_steps=6, log_every=2, validate_every=3, checkpoint_every=3, holdout_fraction=0.2, keep_best=False
    )
    data = _training_data(
        TokenSet(corpus, token_meta(num_codebooks=2), "train.npy"), config, None, None, False, None
    )
    trainer = PriorTrainer(data, Path(folder) / "run", {}, progress=False, device="cpu", context=context)
    trainer.fit()
    torch.save(trainer.model.state_dict(), Path(folder) / f"rank{rank}.pt")
    torch.save(trainer.sampler.sample(0).codes, Path(folder) / f"batch{rank}.pt")
    shutdown_distributed()


@pytest.mark.slow
def test_two_process_prior_training_keeps_replicas_identical(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.multiprocessing.spawn(_prior_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    replicas = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert replicas[0].keys() == replicas[1].keys()
    assert all(torch.equal(replicas[0][name], replicas[1][name]) for name in replicas[0])
    # each process drew its own windows: the identical weights come from gradient averaging
    assert not torch.equal(*(torch.load(tmp_path / f"batch{rank}.pt") for rank in (0, 1)))
    checkpoint = load_checkpoint(tmp_path / "run" / CHECKPOINT_FILE)  # written by rank 0 only
    assert checkpoint["step"] == 6 and checkpoint["run"]["world_size"] == 2
    assert all(torch.equal(checkpoint["model"][name], replicas[0][name]) for name in replicas[0])
    released = Prior.load(tmp_path / "run")
    assert released.training["step"] == 6 and released.training["world_size"] == 2
    assert all(torch.equal(value, replicas[0][name]) for name, value in released.model.state_dict().items())
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")  # one writer: no row twice
    assert [(row["split"], row["step"]) for row in rows] == [
        ("train", 2), ("valid", 3), ("train", 4), ("train", 6), ("valid", 6)
    ]  # fmt: skip


def test_a_missing_tensorboard_warning_names_only_a_setting_that_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The codec's config has no train.tensorboard (the prior's has): its warning must not point to one."""
    import logging

    from vqaudio.training import logs

    monkeypatch.setattr(logs, "is_installed", lambda name: False)
    with caplog.at_level(logging.WARNING):
        logs.RunLog(tmp_path / "codec", 0, 16000).close()
        logs.RunLog(tmp_path / "prior", 0, silence_with="train.tensorboard: false").close()
    codec, prior = (
        r.getMessage() for r in caplog.records if "TensorBoard is not installed" in r.getMessage()
    )
    assert "train.tensorboard" not in codec and "vqaudio[train]" in codec
    assert prior.endswith("or set train.tensorboard: false to silence this)")
