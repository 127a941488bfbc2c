"""ONNX export (``vqaudio export-onnx``, ``vqaudio.codec.onnx_export``): onnxruntime against torch.

Parity: the codes are identical and the audio within 1e-4 of torch's, with or without the harmonic excitation
(measured: 1.3e-7 on the waveform design, 4e-7 on the embedded model; the excitation's F0 and phase are float64
in both runtimes, its comb's sines float32 from an angle reduced in float64). The export takes ~15 s per tiny model, so one is exported here; the waveform design and the embedded model are slow.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_tokenizer, one_line_error, speech_like
from test_stream import causal_config

from vqaudio.codec.istft import ISTFTHead
from vqaudio.codec.onnx_export import (
    SPEC_FILE,
    _ExportISTFTHead,
    check_export,
    export_copy,
    irfft_basis,
    load_sessions,
    rfft_basis,
)
from vqaudio.codec.tokenizer import Tokenizer

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

LENGTHS = [1, 319, 321, 777, 16000 + 17]


def _pitch_tokenizer() -> Tokenizer:
    """The tiny causal mel model with a pitch row, its harmonic branch given random weights."""
    tok = make_tiny_tokenizer(seed=4, name="tiny-pitch", config=causal_config("mel_pitch"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in tok.model.named_parameters():
            if "harmonic_filter" in name or "pitch_embedding" in name:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
    return tok


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tokenizer, Path]:
    """The tiny pitch model saved, then exported by the command line (end to end)."""
    from vqaudio.cli.main import main

    root = tmp_path_factory.mktemp("onnx")
    tok = _pitch_tokenizer()
    tok.save(root / "model")
    assert main(["export-onnx", str(root / "model"), str(root / "export"), "--no-check"]) == 0
    return Tokenizer.load(root / "model"), root / "export"


def assert_parity(
    tok: Tokenizer, folder: Path, clips: list[np.ndarray], tolerance: float, rms: float | None = None
) -> None:
    """Identical codes; decoded audio within ``tolerance`` everywhere and, if given, ``rms`` in RMS."""
    sessions = load_sessions(folder)
    for clip in clips:
        with torch.inference_mode():
            codes = tok.model.encode(torch.from_numpy(clip)[None])[0]
            audio = tok.model.decode(codes[None])[0].numpy()
        onnx_codes = sessions.encode(clip)
        assert onnx_codes.dtype == np.int64 and np.array_equal(onnx_codes, codes.numpy()), len(clip)
        onnx_audio = sessions.decode(codes.numpy())
        assert onnx_audio.shape == audio.shape == (codes.shape[-1] * tok.hop_length,)
        np.testing.assert_allclose(onnx_audio, audio, rtol=0, atol=tolerance)
        if rms is not None:
            assert np.sqrt(np.mean((onnx_audio - audio) ** 2)) < rms, len(clip)


def test_cli_export_writes_both_graphs_and_their_description(exported: tuple[Tokenizer, Path]) -> None:
    tok, folder = exported
    assert sorted(path.name for path in folder.iterdir()) == ["decoder.onnx", "encoder.onnx", SPEC_FILE]
    spec = json.loads((folder / SPEC_FILE).read_text())
    assert spec["format"] == "vqaudio-onnx" and spec["weights_sha256"] == tok.hash
    assert (spec["hop_length"], spec["pitch_rows"], spec["num_codebooks"]) == (320, 1, 3)
    assert spec["encoder"]["outputs"][0] == {"name": "codes", "dtype": "int64", "shape": [4, "frames"]}
    assert "check" not in spec  # --no-check
    sessions = load_sessions(folder)
    assert [i.name for i in sessions.encoder.get_inputs()] == ["audio"]
    assert [o.name for o in sessions.decoder.get_outputs()] == ["audio"]


def test_onnxruntime_equals_torch_on_any_length(exported: tuple[Tokenizer, Path]) -> None:
    tok, folder = exported
    clips = [speech_like(length, seed=length) for length in LENGTHS]
    assert_parity(tok, folder, clips, tolerance=1e-4)
    result = check_export(folder, tok)  # what `export-onnx` records without --no-check
    assert result.codes_equal == 1.0 and result.audio_max_error < 1e-4


def test_decoder_graph_takes_fewer_codebooks(exported: tuple[Tokenizer, Path]) -> None:
    tok, folder = exported
    sessions = load_sessions(folder)
    with torch.inference_mode():
        codes = tok.model.encode(torch.from_numpy(speech_like(8000, seed=9))[None])[0]
        for rows in (2, 3):  # the pitch row and 1 or 2 codebooks
            expected = tok.model.decode(codes[None, :rows])[0].numpy()
            np.testing.assert_allclose(sessions.decode(codes[:rows].numpy()), expected, rtol=0, atol=1e-4)


def test_cli_export_refuses_an_existing_folder_and_a_missing_extra(
    exported: tuple[Tokenizer, Path],
    run: Callable[..., tuple[int, str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tok, folder = exported
    model = tok.path.parent if tok.path is not None else None
    one_line_error(run("export-onnx", model, folder), "exists", "--overwrite")
    one_line_error(run("export-onnx", folder / "nowhere", folder.parent / "new"), "nowhere")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails as if not installed
    one_line_error(run("export-onnx", model, folder.parent / "new"), "onnxscript", "vqaudio[onnx]")
    assert not (folder.parent / "new").exists()


def test_dft_bases_and_overlap_add_equal_torchs() -> None:
    generator = torch.Generator().manual_seed(0)
    n_fft = 640
    frames = torch.randn(2, 5, n_fft, generator=generator, dtype=torch.float64).float()
    window = torch.hann_window(n_fft)
    real, imaginary = (frames @ rfft_basis(n_fft, window)).chunk(2, dim=-1)
    expected = torch.fft.rfft(frames * window)
    torch.testing.assert_close(torch.complex(real, imaginary), expected, rtol=0, atol=2e-4)
    spectrum = torch.randn(2, 2 * (n_fft // 2 + 1), 7, generator=generator)
    inverse = torch.matmul(irfft_basis(n_fft), spectrum)
    expected = torch.fft.irfft(torch.complex(*spectrum.chunk(2, dim=1)), n=n_fft, dim=1)
    torch.testing.assert_close(inverse, expected, rtol=0, atol=1e-6)
    for placement in ("centred", "from_frame", "to_frame"):
        head = ISTFTHead(8, n_fft, 160, window_placement=placement)
        export_head = ISTFTHead(8, n_fft, 160, window_placement=placement)
        export_head.__class__ = _ExportISTFTHead
        export_head.register_buffer("rfft_basis", rfft_basis(n_fft), persistent=False)
        export_head.register_buffer("irfft_basis", irfft_basis(n_fft), persistent=False)
        torch.testing.assert_close(
            export_head.overlap_add(spectrum), head.overlap_add(spectrum), rtol=0, atol=1e-5
        )


def test_export_copy_leaves_the_model_alone() -> None:
    tok = _pitch_tokenizer()
    wav = torch.from_numpy(speech_like(4000))[None]
    with torch.inference_mode():
        before = tok.model.encode(wav)
        copied = export_copy(tok.model)
        assert torch.equal(tok.model.encode(wav), before)  # weight norm still on the original
        assert torch.equal(copied.encode(wav), before)
    assert not any(name.endswith("original0") for name in copied.state_dict())


@pytest.mark.slow
def test_waveform_design_exports(tmp_path: Path) -> None:
    from vqaudio.codec.onnx_export import export_onnx

    tok = make_tiny_tokenizer(seed=5, config=causal_config("waveform"))
    spec = export_onnx(tok, tmp_path / "export")
    assert spec["check"]["codes_equal"] == 1.0 and spec["check"]["audio_max_error"] < 1e-4
    assert_parity(tok, tmp_path / "export", [speech_like(length, seed=length) for length in LENGTHS], 1e-4)


@pytest.mark.slow
def test_embedded_model_parity(tmp_path: Path) -> None:
    """Codes identical on the five example clips; audio within 1e-4 (measured: 4e-7)."""
    import soundfile as sf

    from vqaudio.codec.onnx_export import export_onnx

    tok = Tokenizer.load()
    export_onnx(tok, tmp_path / "export", check=False)
    sessions = load_sessions(tmp_path / "export")
    examples = sorted((Path(__file__).resolve().parents[1] / "vqaudio" / "examples").glob("*.flac"))
    assert len(examples) == 5
    for path in examples:
        clip, _ = sf.read(path, dtype="float32")
        with torch.inference_mode():
            codes = tok.model.encode(torch.from_numpy(clip)[None])[0]
            audio = tok.model.decode(codes[None])[0].numpy()
        assert np.array_equal(sessions.encode(clip), codes.numpy()), path.name
        error = sessions.decode(codes.numpy()) - audio
        assert np.abs(error).max() < 1e-4, path.name
