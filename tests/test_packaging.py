"""What a user installing the package gets: the demo from a built wheel, licences, optional extras, start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import one_line_error

ROOT = Path(__file__).resolve().parents[1]


def test_license_files_and_the_weights_licence_are_stated(run, tmp_path: Path) -> None:
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    weights_license = ROOT / "vqaudio" / "pretrained" / "WEIGHTS-LICENSE.md"
    assert "CC-BY-SA-3.0" in weights_license.read_text()
    for command in (["info"], ["info", "--json"], ["info", "--prior"]):
        code, out, err = run(*command)
        assert code == 0, err
        assert "CC-BY-SA-3.0" in out and "WEIGHTS-LICENSE.md" in out, command
    from vqaudio.codec.tokenizer import Tokenizer

    copy = Tokenizer.load().save(tmp_path / "copy")  # a copy of the embedded model keeps its licence
    assert "CC-BY-SA-3.0" in json.loads((copy / "config.json").read_text())["license"]


def test_a_model_without_a_licence_says_so(run, tiny_model_dir: Path) -> None:
    code, out, err = run("info", tiny_model_dir)
    assert code == 0, err
    assert "weights licence: not recorded" in out


def test_eval_without_matplotlib_names_the_extra_before_any_work(
    run, monkeypatch: pytest.MonkeyPatch, audio_folder: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    out = tmp_path / "report"
    result = run("eval", audio_folder, "--out", out, "--model", tiny_model_dir, "--no-baselines")
    one_line_error(result, "matplotlib", "pip install 'vqaudio[plots]'")
    assert not out.exists()


def test_training_logs_without_tensorboard_or_matplotlib_keep_the_jsonl(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from vqaudio.training.logs import METRICS_FILE, TENSORBOARD_DIR, RunLog

    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with caplog.at_level("WARNING"):
        run_log = RunLog(tmp_path, start_step=0, sample_rate=16000)
    assert "pip install 'vqaudio[train]'" in caplog.text
    run_log.write("train", 1, {"loss": 0.5})
    run_log.close()
    assert json.loads((tmp_path / METRICS_FILE).read_text()) == {"kind": "train", "step": 1, "loss": 0.5}
    assert not (tmp_path / TENSORBOARD_DIR).exists()


def _modules_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(result.stdout.split())


def test_help_imports_no_torch_and_tokenize_no_plotting_code(write_audio, speech, tmp_path: Path) -> None:
    help_modules = _modules_after(
        "from vqaudio.cli.main import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert "typer" in help_modules and "torch" not in help_modules
    wav = write_audio(tmp_path / "a.wav", speech(16000))
    tokenize_modules = _modules_after(
        f"from vqaudio.cli.main import main\nassert main(['tokenize', {str(wav)!r}, {str(tmp_path / 't.npy')!r}]) == 0"
    )
    assert "torch" in tokenize_modules  # it did run
    heavy = {"matplotlib", "tensorboard", "librosa", "numba", "torch._dynamo", "scipy.signal"}
    assert not heavy & tokenize_modules, heavy & tokenize_modules


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = dist.glob("vqaudio-*.whl")
    return built


def test_the_wheel_ships_the_models_examples_and_licences(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in (
        "vqaudio/pretrained/default/model.safetensors",
        "vqaudio/pretrained/prior/model.safetensors",
        "vqaudio/pretrained/WEIGHTS-LICENSE.md",
        "vqaudio/examples/README.md",
        "vqaudio/serve/static/index.html",  # vqaudio serve's page
        "vqaudio/serve/static/app.js",
        "vqaudio/serve/static/page.css",
    ):
        assert needed in names, needed
    assert (
        len([name for name in names if name.startswith("vqaudio/examples/") and name.endswith(".flac")]) == 5
    )
    assert any(
        name.endswith(".dist-info/licenses/LICENSE") or name.endswith(".dist-info/LICENSE") for name in names
    )
    assert not [name for name in names if name.startswith(("tests/", "egs/", "recipes/", "benchmarks/"))]


def test_demo_runs_from_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    """A fresh venv holding only the wheel (its dependencies borrowed from this environment's site-packages)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # pip would see a checkout
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        env=env,
    )
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    # dependencies (torch, numpy, ...) from this environment; a plain path entry runs none of its .pth hooks,
    # so this checkout's editable install of vqaudio stays invisible
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = subprocess.run(
        [str(venv / "bin" / "vqaudio"), "demo", "--out", "demo_out"],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert len(list((work / "demo_out" / "resynth").rglob("*.wav"))) == 5
    where = subprocess.check_output(
        [str(python), "-c", "import vqaudio; print(vqaudio.__file__)"], cwd=work, text=True, env=env
    )
    assert where.startswith(str(site)), where  # the demo ran the wheel's code, not this checkout's
