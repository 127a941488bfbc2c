"""``resolve_device`` and ``process_device``: the one device rule of every command, checked without a GPU
(torch.cuda is told what it has)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_prior import fast_train_config, pattern_corpus, tiny_prior, token_meta

from vqaudio.devices import resolve_device
from vqaudio.errors import InputError
from vqaudio.prior.training import TokenSet, train_prior
from vqaudio.training.distributed import SINGLE_PROCESS, DistributedContext, process_device


def pretend_gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize(
    "spec, gpus, expected",
    [
        ("auto", 0, "cpu"),
        (None, 0, "cpu"),
        ("auto", 2, "cuda"),
        ("cpu", 2, "cpu"),
        (" CPU ", 0, "cpu"),
        ("cuda", 1, "cuda"),
        ("cuda:0", 1, "cuda:0"),
        ("cuda:1", 2, "cuda:1"),
        (torch.device("cpu"), 0, "cpu"),
        (torch.device("cuda", 1), 2, "cuda:1"),
    ],
)
def test_resolve_device_picks(
    monkeypatch: pytest.MonkeyPatch, spec: object, gpus: int, expected: str
) -> None:
    pretend_gpus(monkeypatch, gpus)
    assert resolve_device(spec) == torch.device(expected)  # type: ignore[arg-type]


def test_auto_is_the_cpu_on_this_machine_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize(
    "spec, gpus, needle",
    [
        ("gpu", 2, "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
        ("cuda:", 2, "got 'cuda:'"),
        ("cuda:x", 2, "got 'cuda:x'"),
        ("cpu:1", 2, "got 'cpu:1'"),
        ("mps", 0, "got 'mps'"),
        ("cuda", 0, "CUDA is not available"),
        ("cuda:0", 0, "use cpu or auto"),
        ("cuda:2", 2, "this machine has 2 CUDA device(s), cuda:0 to cuda:1"),
    ],
)
def test_resolve_device_refuses_in_one_line(
    monkeypatch: pytest.MonkeyPatch, spec: str, gpus: int, needle: str
) -> None:
    pretend_gpus(monkeypatch, gpus)
    with pytest.raises(InputError) as caught:
        resolve_device(spec)
    assert needle in str(caught.value) and "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)  # Python callers catching ValueError keep working


def test_each_process_under_torchrun_takes_the_gpu_of_its_local_rank() -> None:
    second = DistributedContext(rank=3, world_size=4, local_rank=1)
    assert process_device(torch.device("cuda"), second) == torch.device("cuda", 1)
    assert process_device(torch.device("cpu"), second) == torch.device("cpu")
    assert process_device(torch.device("cuda", 1), SINGLE_PROCESS) == torch.device("cuda", 1)
    with pytest.raises(InputError, match="CUDA_VISIBLE_DEVICES"):
        process_device(torch.device("cuda", 0), second)  # one GPU named for every process


def test_the_trainers_and_the_prior_take_the_same_device_spellings(tmp_path: Path) -> None:
    """device="cpu" and device="auto" (the CPU here) train the same prior; a bad spelling stops before work."""
    train = TokenSet(pattern_corpus(), token_meta(num_codebooks=2), "train.npy")
    config = fast_train_config(max_steps=3, holdout_fraction=0.0, log_every=1, num_threads=1)
    weights = {}
    for device in ("cpu", "auto"):
        result = train_prior(train, config, tmp_path / device, progress=False, device=device)
        assert result.step == 3 and result.prior.device == torch.device("cpu")
        weights[device] = result.prior.model.state_dict()
    assert all(torch.equal(weights["cpu"][name], weights["auto"][name]) for name in weights["cpu"])
    with pytest.raises(InputError, match="got 'gpu'"):
        train_prior(train, config, tmp_path / "gpu", progress=False, device="gpu")
    assert not (tmp_path / "gpu").exists()
    assert tiny_prior().to("auto").device == resolve_device("auto")
