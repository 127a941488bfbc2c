"""VQVAE and its modules: exact lengths, causality, round trips, receptive field, recipes, validation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vqaudio.codec.conv import Conv1d, ConvTranspose1d
from vqaudio.codec.istft import ISTFTHead
from vqaudio.codec.losses import ReconstructionLoss, mel_distance
from vqaudio.codec.vqvae import VQVAE, build_model
from vqaudio.config import DecoderConfig, EncoderConfig, LossConfig, ModelConfig, QuantizerConfig, load_yaml
from vqaudio.features import LogMel, _mel_filterbank, hz_to_mel, mel_to_hz

# tokenizer recipes; prior_*.yaml hold PriorRunConfig and are tested in test_prior.py
RECIPES = sorted(
    path
    for path in (Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml")
    if not path.name.startswith("prior_")
)
HOP = 320  # both tiny designs: 50 Hz at 16 kHz, like the shipped recipes


def tiny_config(design: str, causal: bool = False, kind: str = "residual") -> ModelConfig:
    """A few-thousand-parameter model of either design, hop 320."""
    quantizer = QuantizerConfig(kind=kind, num_codebooks=3 if kind == "residual" else 2, codebook_size=16)
    if design == "mel":
        encoder = EncoderConfig(
            input="mel",
            channels=8,
            max_channels=16,
            strides=(2,),
            n_mels=16,
            mel_n_fft=320,
            mel_hop_length=160,
        )
        decoder = DecoderConfig(
            output="istft", channels=8, max_channels=16, strides=(2,), istft_n_fft=320, istft_hop_length=160
        )
    else:
        encoder = EncoderConfig(channels=2, max_channels=8, strides=(2, 4, 5, 8))
        decoder = DecoderConfig(channels=2, max_channels=8, strides=(8, 5, 4, 2))
    return ModelConfig(latent_dim=8, causal=causal, encoder=encoder, quantizer=quantizer, decoder=decoder)


def tiny_model(design: str, causal: bool = False, kind: str = "residual") -> VQVAE:
    torch.manual_seed(0)
    return build_model(tiny_config(design, causal, kind)).eval()


def speech_like(num_samples: int, batch: int = 2, sample_rate: int = 16000, seed: int = 0) -> torch.Tensor:
    """[B, T] harmonics of a gliding pitch with a slow amplitude envelope, plus a little noise."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(num_samples) / sample_rate
    signals = []
    for _ in range(batch):
        f0 = 110 + 60 * torch.rand((), generator=generator)
        pitch = f0 * (1 + 0.2 * torch.sin(2 * math.pi * 3 * t))
        phase = 2 * math.pi * torch.cumsum(pitch, 0) / sample_rate
        voiced = sum(torch.sin(k * phase) / k for k in range(1, 12))
        envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 4 * t + 6 * torch.rand((), generator=generator))
        noise = 0.02 * torch.randn(num_samples, generator=generator)
        signals.append(0.1 * envelope * voiced + noise)
    return torch.stack(signals)


# --------------------------------------------------------------------------------------------------
# Lengths
# --------------------------------------------------------------------------------------------------
LENGTHS = [1, 2, 159, 160, 161, 319, 320, 321, 1000, 16000, 3 * 16000 + 7]


@pytest.mark.parametrize("design", ["mel", "waveform"])
def test_output_length_equals_input_length(design: str) -> None:
    model = tiny_model(design)
    assert model.hop_length == HOP
    with torch.inference_mode():
        for length in LENGTHS:
            wav = speech_like(length)
            out = model(wav)
            frames = math.ceil(length / HOP)
            assert model.num_frames(length) == frames
            assert out.audio.shape == (2, length), length
            assert out.codes.shape == (2, 3, frames), length
            assert out.latent.shape == (2, 8, frames), length
            codes = model.encode(wav)
            assert codes.shape == (2, 3, frames)
            assert model.decode(codes).shape == (2, frames * HOP)
            assert model.decode(codes, num_samples=length).shape == (2, length)


def test_conv_lengths_are_exact() -> None:
    torch.manual_seed(0)
    for causal in (False, True):
        for stride, kernel, dilation in [(1, 3, 4), (2, 4, 1), (5, 10, 1), (4, 7, 2)]:
            conv = Conv1d(3, 2, kernel, stride=stride, dilation=dilation, causal=causal)
            transposed = ConvTranspose1d(2, 3, 2 * stride, stride=stride, causal=causal)
            for length in (1, stride, stride + 1, 7 * stride, 7 * stride + 1):
                frames = conv(torch.randn(1, 3, length)).shape[-1]
                assert frames == math.ceil(length / stride)
                assert transposed(torch.randn(1, 2, frames)).shape[-1] == frames * stride


def test_conv_rejects_kernel_shorter_than_stride() -> None:
    with pytest.raises(ValueError, match="kernel"):
        Conv1d(1, 1, kernel_size=2, stride=4)
    with pytest.raises(ValueError, match="kernel_size"):
        ConvTranspose1d(1, 1, kernel_size=2, stride=4)


def test_log_mel_frames_and_buffers() -> None:
    log_mel = LogMel(16000, n_fft=640, hop_length=160, n_mels=40)
    for length in (1, 159, 160, 161, 16000):
        assert log_mel(torch.randn(2, length)).shape == (2, 40, math.ceil(length / 160))
    assert log_mel(torch.randn(320)).shape == (40, 2)
    assert log_mel.state_dict() == {}  # the filterbank and window are derived: not in checkpoints
    silence = log_mel(torch.zeros(1, 1600))
    assert torch.allclose(silence, torch.full_like(silence, math.log(1e-5)))


@pytest.mark.parametrize(
    "sample_rate, n_fft, n_mels, f_min, f_max",
    [
        (16000, 1024, 80, 0.0, None),
        (16000, 640, 40, 0.0, 8000.0),
        (24000, 2048, 128, 30.0, 11000.0),
        (16000, 400, 80, 0.0, None),
    ],
)
def test_mel_filterbank_is_librosas_bit_for_bit(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float | None
) -> None:
    """The embedded model was trained with librosa's filterbank: the in-house one must give the same bits."""
    librosa = pytest.importorskip("librosa")  # in the dev extra; the package itself no longer needs it
    expected = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max)
    actual = _mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max).numpy()
    assert actual.dtype == expected.dtype and np.array_equal(actual, expected)


def test_mel_filterbank_shape_and_slaney_areas() -> None:
    bank = _mel_filterbank(16000, 1024, 80, 0.0, None).double()
    assert bank.shape == (80, 513) and bool((bank >= 0).all())
    bin_hz = 16000 / 1024
    # Slaney normalisation: each triangle (height 2 / width) has unit area in Hz, up to the binning.
    areas = bank.sum(dim=1) * bin_hz
    assert torch.allclose(areas, torch.ones(80, dtype=torch.float64), atol=0.05)
    assert float(hz_to_mel(1000.0)) == pytest.approx(15.0) and float(
        mel_to_hz(hz_to_mel(4321.0))
    ) == pytest.approx(4321.0)


@pytest.mark.parametrize("design", ["mel", "waveform"])
def test_a_model_built_on_the_meta_device_has_the_real_models_tensors(design: str) -> None:
    """Tokenizer.load checks a file's header against a meta-device build: names and shapes must match."""
    with torch.device("meta"):
        on_meta = build_model(tiny_config(design))
    real = build_model(tiny_config(design))
    shapes = {name: tuple(tensor.shape) for name, tensor in real.state_dict().items()}
    assert {name: tuple(tensor.shape) for name, tensor in on_meta.state_dict().items()} == shapes


def test_loading_the_embedded_model_imports_neither_librosa_nor_dynamo() -> None:
    """librosa (a mel filterbank) and torch._dynamo (weight norm on meta) cost ~230 MB and ~4 s of start-up."""
    import subprocess
    import sys

    code = (
        "import sys; from vqaudio.codec.tokenizer import Tokenizer; Tokenizer.load(); "
        "print(sorted({'librosa', 'torch._dynamo', 'matplotlib'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------------
# Causality
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("design", ["mel", "waveform"])
def test_causal_encoder_never_sees_the_future(design: str) -> None:
    model = tiny_model(design, causal=True)
    wav = speech_like(12 * HOP)
    with torch.inference_mode():
        latent, codes = model(wav).latent, model.encode(wav)
        for frame in (0, 4, 9):
            changed = wav.clone()
            changed[:, (frame + 1) * HOP :] += torch.randn_like(changed[:, (frame + 1) * HOP :])
            new_latent, new_codes = model(changed).latent, model.encode(changed)
            torch.testing.assert_close(
                new_latent[..., : frame + 1], latent[..., : frame + 1], atol=1e-6, rtol=0
            )
            assert torch.equal(new_codes[..., : frame + 1], codes[..., : frame + 1])
            assert not torch.allclose(new_latent[..., frame + 1 :], latent[..., frame + 1 :], atol=1e-3)


@pytest.mark.parametrize("design", ["mel", "waveform"])
def test_non_causal_encoder_looks_ahead(design: str) -> None:
    """The counterpart of the causality test: without causal padding a frame does read the next samples."""
    model = tiny_model(design, causal=False)
    wav = speech_like(12 * HOP)
    changed = wav.clone()
    changed[:, 5 * HOP : 5 * HOP + 32] += 0.5
    with torch.inference_mode():
        assert not torch.allclose(model(changed).latent[..., 4], model(wav).latent[..., 4], atol=1e-5)


@pytest.mark.parametrize("design", ["mel", "waveform"])
def test_causal_decoder_never_hears_later_codes(design: str) -> None:
    model = tiny_model(design, causal=True)
    with torch.inference_mode():
        codes = model.encode(speech_like(12 * HOP))
        audio = model.decode(codes)
        frame = 6
        changed = codes.clone()
        changed[..., frame + 1 :] = (changed[..., frame + 1 :] + 1) % model.codebook_size
        new_audio = model.decode(changed)
    end = (frame + 1) * HOP
    torch.testing.assert_close(new_audio[:, :end], audio[:, :end], atol=1e-6, rtol=0)
    assert not torch.allclose(new_audio[:, end:], audio[:, end:], atol=1e-4)


# --------------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("design", ["mel", "waveform"])
def test_decode_of_encode_equals_forward(design: str) -> None:
    model = tiny_model(design)
    wav = speech_like(5 * HOP + 17)
    with torch.inference_mode():
        for n_q in (None, 1, 2, 3):
            out = model(wav, n_q=n_q)
            codes = model.encode(wav, n_q=n_q)
            assert torch.equal(codes, out.codes)
            assert codes.shape[1] == (n_q or 3)
            torch.testing.assert_close(model.decode(codes, wav.shape[-1]), out.audio, atol=1e-6, rtol=0)
        # Fewer codebooks change the audio: coarser codes really are used.
        assert not torch.allclose(model(wav, n_q=1).audio, model(wav).audio, atol=1e-4)


def test_group_quantizer_round_trip() -> None:
    model = tiny_model("mel", kind="group")
    wav = speech_like(4 * HOP)
    with torch.inference_mode():
        out = model(wav)
        assert out.codes.shape == (2, 2, 4)
        torch.testing.assert_close(
            model.decode(model.encode(wav), wav.shape[-1]), out.audio, atol=1e-6, rtol=0
        )


@pytest.mark.parametrize("design", ["mel", "waveform"])
def test_training_step_reaches_every_weight(design: str) -> None:
    model = tiny_model(design).train()
    out = model(speech_like(8 * HOP, batch=4))
    loss = (out.audio - speech_like(8 * HOP, batch=4)).abs().mean() + out.quantizer.loss
    loss.backward()
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        if name.startswith(("encoder.", "decoder.")):
            assert parameter.grad.abs().sum() > 0, name


def test_safetensors_round_trip(tmp_path: Path) -> None:
    """Weight-norm parametrizations save as plain tensors and load strictly."""
    model = tiny_model("mel")
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    torch.manual_seed(1)
    other = build_model(tiny_config("mel")).eval()
    other.load_state_dict(load_file(str(path)), strict=True)
    wav = speech_like(3 * HOP)
    with torch.inference_mode():
        assert torch.equal(other(wav).audio, model(wav).audio)


def test_release_weights_leave_out_training_statistics_and_load_strictly() -> None:
    torch.manual_seed(0)
    model = tiny_model("mel").train()
    model(speech_like(1600, batch=2))  # k-means init + one EMA update: statistics differ from the codes
    release = model.release_state_dict()
    training_only = set(model.state_dict()) - set(release)
    statistics = ("ema_sum", "ema_cluster_size", "steps_unused")
    assert training_only and all(name.rsplit(".", 1)[-1] in statistics for name in training_only)

    torch.manual_seed(1)
    fresh = tiny_model("mel").eval()
    fresh.load_release_state_dict(release)
    wav = speech_like(3200, batch=1, seed=3)
    model.eval()
    with torch.no_grad():
        codes = model.encode(wav)
        assert torch.equal(fresh.encode(wav), codes)
        assert torch.equal(fresh.decode(codes), model.decode(codes))
    # the training statistics restart consistent with the loaded codebooks
    for module in fresh.modules():
        if hasattr(module, "ema_sum"):
            torch.testing.assert_close(module.ema_sum / module.ema_cluster_size[:, None], module.codebook)
            assert int(module.steps_unused.sum()) == 0

    broken = dict(release)
    broken.pop(next(iter(broken)))
    with pytest.raises(RuntimeError, match="missing keys"):
        fresh.load_release_state_dict(broken)
    with pytest.raises(RuntimeError, match="unexpected keys"):
        fresh.load_release_state_dict({**release, "extra.weight": torch.zeros(1)})


# --------------------------------------------------------------------------------------------------
# Receptive field
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("design", ["mel", "waveform"])
@pytest.mark.parametrize("causal", [False, True])
def test_encoder_receptive_field_is_exact(design: str, causal: bool) -> None:
    """Outside the receptive field nothing changes the latent; just inside it, something does."""
    model = tiny_model(design, causal=causal)
    reach = model.encoder_receptive_field
    assert model.receptive_field >= reach
    frame = reach // HOP + 3
    length = (2 * frame + 1) * HOP
    wav = speech_like(length, batch=1)
    start, stop = frame * HOP - reach, (frame + 1) * HOP + reach  # what frame `frame` may depend on
    assert start > 0 and stop < length
    with torch.inference_mode():
        reference = model(wav).latent[..., frame]
        outside = wav.clone()
        outside[:, :start] = torch.randn(start)
        outside[:, stop:] = torch.randn(length - stop)
        torch.testing.assert_close(model(outside).latent[..., frame], reference, atol=1e-6, rtol=0)
        inside = wav.clone()
        inside[:, start : start + HOP // 4] += 1.0  # a block: the Hann window is 0 at its very first sample
        assert not torch.allclose(model(inside).latent[..., frame], reference, atol=1e-6)


@pytest.mark.parametrize("design", ["mel", "waveform"])
def test_decoder_receptive_field_bounds_the_output(design: str) -> None:
    model = tiny_model(design)
    reach_frames = model.decoder_receptive_field // HOP
    frame = reach_frames + 2
    with torch.inference_mode():
        codes = model.encode(speech_like((2 * frame + 1) * HOP, batch=1))
        span = slice(frame * HOP, (frame + 1) * HOP)
        reference = model.decode(codes)[:, span]
        changed = codes.clone()
        changed[..., : frame - reach_frames] = (changed[..., : frame - reach_frames] + 1) % 16
        changed[..., frame + reach_frames + 1 :] = (changed[..., frame + reach_frames + 1 :] + 1) % 16
        torch.testing.assert_close(model.decode(changed)[:, span], reference, atol=1e-6, rtol=0)
        edge = codes.clone()
        edge[..., frame - reach_frames] = (edge[..., frame - reach_frames] + 1) % 16
        assert not torch.allclose(model.decode(edge)[:, span], reference, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# iSTFT head
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("placement", ["centred", "from_frame", "to_frame"])
def test_istft_head_inverts_a_matching_stft(placement: str) -> None:
    """With the projection bypassed, log|X| and angle(X) of the head's own framing give the signal back."""
    n_fft, hop, frames = 64, 16, 20
    head = ISTFTHead(channels=2 * (n_fft // 2 + 1), n_fft=n_fft, hop_length=hop, window_placement=placement)
    head.projection = nn.Identity()  # type: ignore[assignment]
    signal = speech_like(frames * hop, batch=2)
    padding = n_fft - hop
    padded = torch.nn.functional.pad(signal, (head.crop_left, padding - head.crop_left))
    spectrum = torch.stft(
        padded, n_fft, hop, window=torch.hann_window(n_fft), center=False, return_complex=True
    )
    assert spectrum.shape[-1] == frames
    features = torch.cat([spectrum.abs().clamp(min=1e-12).log(), spectrum.angle()], dim=1)
    output = head(features)
    assert output.shape == (2, frames * hop)
    # Uncentred: the first (from_frame) or last (to_frame) n_fft - hop samples fade in or out (their window
    # envelope is floored); the rest is exact.
    keep = {"centred": slice(None), "from_frame": slice(padding, None), "to_frame": slice(None, -padding)}
    torch.testing.assert_close(output[:, keep[placement]], signal[:, keep[placement]], atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("placement", "causal", "first_sample"),
    [("auto", False, 16 - 24), ("centred", True, 16 - 24), ("auto", True, 16), ("from_frame", False, 16),
     ("to_frame", True, 32 - 64)],
)  # fmt: skip
def test_istft_window_placement_sets_where_a_frame_sounds(
    placement: str, causal: bool, first_sample: int
) -> None:
    """Frame 1 (its hop is samples 16-31) sounds in the n_fft samples from ``first_sample``: centred on its hop,
    starting with it, or ending with it; ``auto`` is centred, or starting with it for a causal head."""
    n_fft, hop, frames = 64, 16, 12
    head = ISTFTHead(2 * (n_fft // 2 + 1), n_fft, hop, causal=causal, window_placement=placement)
    head.projection = nn.Identity()  # type: ignore[assignment]
    features = torch.zeros(1, 2 * (n_fft // 2 + 1), frames)
    features[:, : n_fft // 2 + 1] = -30.0  # silence
    reference = head(features)[0]
    features[:, 5, 1] = 0.0  # frame 1: a tone in bin 5
    changed = (head(features)[0] - reference).abs() > 1e-6
    sounding = torch.nonzero(changed)[:, 0]
    start, stop = max(first_sample, 0), first_sample + n_fft
    assert int(sounding.min()) <= start + 1 and int(sounding.max()) >= stop - 2
    assert not changed[:start].any() and not changed[stop:].any()


def test_causal_istft_head_fades_in_instead_of_amplifying_its_first_frames() -> None:
    """Frames that are no STFT of any signal (what a model predicts while it learns): the first n_fft - hop
    output samples, covered by fewer frames than the rest, are not amplified to make up for it. Dividing them
    by the partial window envelope gained up to 67x there and made causal training diverge."""
    n_fft, hop, frames = 64, 16, 40
    head = ISTFTHead(channels=2 * (n_fft // 2 + 1), n_fft=n_fft, hop_length=hop, causal=True)
    head.projection = nn.Identity()  # type: ignore[assignment]
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(8, 2 * (n_fft // 2 + 1), frames, generator=generator)
    output = head(features).abs()
    start, steady = output[:, : n_fft - hop], output[:, n_fft - hop :]
    assert start.max() <= steady.max() and start.mean() < steady.mean()


def test_istft_head_needs_overlapping_windows() -> None:
    with pytest.raises(ValueError, match="istft_n_fft"):
        ISTFTHead(channels=8, n_fft=160, hop_length=160)
    with pytest.raises(ValueError, match="phase"):
        ISTFTHead(channels=8, n_fft=320, hop_length=160, phase="cumulative")


def test_integrated_phase_makes_a_steady_sinusoid_from_a_zero_deviation() -> None:
    """Energy in one bin and no deviation: integrated phase gives that bin's sinusoid, direct phase does not.

    Bin 3 of a 64-point FFT at hop 16 must advance 1.5 pi per frame; the direct head, given a constant phase,
    restarts the sinusoid every frame and the overlapping frames partly cancel.
    """
    n_fft, hop, frames, k = 64, 16, 40, 3
    num_bins = n_fft // 2 + 1
    log_magnitude = torch.full((1, num_bins, frames), -30.0)
    log_magnitude[:, k] = math.log(n_fft / 4)  # bin k of a unit sinusoid under a Hann window
    prediction = torch.cat([log_magnitude, torch.zeros(1, num_bins, frames)], dim=1)
    t = torch.arange(frames * hop, dtype=torch.float64)
    interior = slice(n_fft, (frames - 4) * hop)
    for phase, expect_sinusoid in [("integrated", True), ("direct", False)]:
        head = ISTFTHead(channels=2 * num_bins, n_fft=n_fft, hop_length=hop, phase=phase)
        head.projection = nn.Identity()  # type: ignore[assignment]
        assert head.integrates_phase == (phase == "integrated")
        output = head(prediction)[0, interior].double()
        # least-squares fit of a cos + b sin at the bin's frequency: a steady sinusoid fits exactly
        angle = 2 * math.pi * k * t[interior] / n_fft
        basis = torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
        fit = basis @ torch.linalg.lstsq(basis, output[:, None]).solution[:, 0]
        residual = float((output - fit).norm() / output.norm())
        if expect_sinusoid:
            assert residual < 1e-4
            # one bin without its Hann side lobes: amplitude sum(w) / sum(w^2) / 2 = 2/3 of the sinusoid's
            assert float(output.abs().max()) == pytest.approx(2 / 3, rel=0.01)
        else:
            assert residual > 0.3


def test_harmonic_excitation_synthesises_the_predicted_f0_with_the_predicted_gain() -> None:
    """Gains 16 = 0.1 x n_fft / 4 on every bin, no direct branch, F0 200 Hz: a steady 200 Hz harmonic series
    at amplitude 0.1 per harmonic, phase-continuous over frames (a least-squares fit of the harmonics
    explains it all). With its new modules at zero, the head is the plain head."""
    n_fft, hop, frames, channels, f0 = 640, 160, 60, 4, 200.0
    plain = ISTFTHead(channels, n_fft, hop)
    head = ISTFTHead(channels, n_fft, hop, excitation="harmonic", sample_rate=16000)
    assert head.integrates_phase and not plain.integrates_phase
    head.load_state_dict(plain.state_dict(), strict=False)
    features = torch.randn(1, channels, frames)
    with torch.no_grad():
        torch.testing.assert_close(head(features), plain(features), rtol=0, atol=0)
        head.projection.conv.bias.fill_(-30.0)  # no direct branch
        head.projection.conv.parametrizations.weight.original0.zero_()  # weight norm's gain
        head.harmonic_filter.conv.bias[: head.num_bins] = 0.1 * n_fft / 4
        position = (math.log(f0) - math.log(50.0)) / (math.log(550.0) - math.log(50.0))
        head.pitch.conv.bias.fill_(math.log(position / (1 - position)))
        prediction = head.predict(features)
        assert float(head.log_f0(prediction).exp().sub(f0).abs().max()) < 1e-3
        output = head(features)[0].double()
    t = torch.arange(frames * hop, dtype=torch.float64) / 16000
    interior = slice(n_fft, (frames - 4) * hop)
    angles = [2 * math.pi * f0 * k * t[interior] for k in range(1, 40)]  # every harmonic below 8 kHz
    basis = torch.stack([f(a) for a in angles for f in (torch.cos, torch.sin)], dim=1)
    basis = torch.cat([basis, torch.cos(2 * math.pi * 8000 * t[interior])[:, None]], dim=1)  # at Nyquist
    coefficients = torch.from_numpy(np.linalg.lstsq(basis.numpy(), output[interior].numpy(), rcond=None)[0])
    residual = output[interior] - basis @ coefficients
    assert float(residual.norm() / output[interior].norm()) < 0.01  # -40 dB: float32 combs
    amplitudes = coefficients[:-1].reshape(-1, 2).norm(dim=1)
    torch.testing.assert_close(amplitudes, torch.full_like(amplitudes, 0.1), rtol=0.02, atol=0)


def test_harmonic_excitation_model_decodes_in_its_parts() -> None:
    """decode == overlap_add(resolve_phase(decode_spectrum)), as for integrated phase; F0 is part of the
    prediction, and the excitation needs istft output with direct phase."""
    config = ModelConfig(
        latent_dim=8,
        encoder=EncoderConfig(channels=4, max_channels=8, strides=(2, 4, 5, 8)),
        decoder=DecoderConfig(
            output="istft", channels=8, max_channels=16, strides=(2,), istft_excitation="harmonic"
        ),
        quantizer=QuantizerConfig(num_codebooks=2, codebook_size=16),
    )
    torch.manual_seed(0)
    model = build_model(config).eval()
    head = model.decoder.head
    with torch.no_grad():
        for conv in (head.harmonic_filter, head.pitch):  # some harmonic branch, an F0 that varies
            nn.init.normal_(conv.conv.weight, std=0.5)
        codes = torch.randint(0, 16, (1, 2, 30))
        whole = model.decode(codes)
        prediction = model.decode_spectrum(codes)
        assert prediction.shape == (1, 4 * 321 + 1, 60)
        assert float(head.log_f0(prediction).std()) > 0.05
        torch.testing.assert_close(head.overlap_add(head.resolve_phase(prediction)), whole, rtol=0, atol=1e-6)
        output = model(torch.randn(1, 30 * 320) * 0.1)
        assert output.log_f0 is not None and output.log_f0.shape == (1, 60)
    assert build_model(ModelConfig()).forward(torch.zeros(1, 320)).log_f0 is None
    with pytest.raises(ValueError, match="istft_excitation"):
        ModelConfig(decoder=DecoderConfig(istft_excitation="harmonic")).validate()
    with pytest.raises(ValueError, match="direct"):
        ISTFTHead(8, 640, 160, phase="integrated", excitation="harmonic")


def test_integrated_phase_model_decodes_in_its_parts() -> None:
    """decode == overlap_add(resolve_phase(decode_spectrum)); the running sum makes frames non-local."""
    config = ModelConfig(
        latent_dim=8,
        encoder=EncoderConfig(channels=4, max_channels=8, strides=(2, 4, 5, 8)),
        decoder=DecoderConfig(
            output="istft",
            channels=8,
            max_channels=16,
            strides=(2,),
            istft_n_fft=320,
            istft_hop_length=160,
            istft_phase="integrated",
        ),
        quantizer=QuantizerConfig(num_codebooks=2, codebook_size=16),
    )
    torch.manual_seed(0)
    model = build_model(config).eval()
    assert model.integrates_phase and not build_model(ModelConfig()).integrates_phase
    codes = torch.randint(0, 16, (1, 2, 30))
    head = model.decoder.head
    with torch.no_grad():
        whole = model.decode(codes)
        prediction = model.decode_spectrum(codes)
        assert prediction.shape == (1, 2 * 161, 60)
        torch.testing.assert_close(head.overlap_add(head.resolve_phase(prediction)), whole, rtol=0, atol=1e-6)
        # changing the first frame's code changes the phase, hence the audio, at the far end
        changed = codes.clone()
        changed[..., 0] = (changed[..., 0] + 1) % 16
        far = slice(25 * 320, None)
        assert not torch.allclose(model.decode(changed)[:, far], whole[:, far], atol=1e-4)
    with pytest.raises(ValueError, match="istft"):
        ModelConfig(decoder=DecoderConfig(istft_phase="integrated")).validate()
    with pytest.raises(ValueError, match="istft_window"):
        ModelConfig(decoder=DecoderConfig(istft_window="to_frame")).validate()


# --------------------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------------------
def test_recipes_exist() -> None:
    names = {path.stem for path in RECIPES}
    assert {"rvq_waveform", "group_waveform", "rvq_mel", "tiny"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_recipe_loads_builds_and_runs(recipe: Path) -> None:
    config = load_yaml(recipe)
    torch.manual_seed(0)
    model = build_model(config.model).eval()
    length = int(0.3 * config.model.sample_rate)
    with torch.inference_mode():
        out = model(speech_like(length, batch=1, sample_rate=config.model.sample_rate))
    assert out.audio.shape == (1, length)
    rows = config.model.pitch_rows + config.model.quantizer.num_codebooks  # a pitch row first, if any
    assert out.codes.shape == (1, rows, model.num_frames(length))
    assert torch.isfinite(out.audio).all()


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------
def test_bad_inputs_get_clear_errors() -> None:
    model = tiny_model("mel")
    with pytest.raises(ValueError, match=r"expects audio \[B, T\], got shape \(2, 16000, 3\); pass mono"):
        model.encode(torch.zeros(2, 16000, 3))
    with pytest.raises(ValueError, match=r"wav\[None\]"):
        model.encode(torch.zeros(16000))
    with pytest.raises(ValueError, match="at least one sample"):
        model(torch.zeros(1, 0))
    with pytest.raises(TypeError, match="float audio"):
        model.encode(torch.zeros(1, 100, dtype=torch.int16))
    with pytest.raises(TypeError, match="torch.Tensor"):
        model.encode([0.0] * 100)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_q"):
        model.encode(torch.zeros(1, 100), n_q=4)
    with pytest.raises(ValueError, match="codebook_size is 16"):
        model.decode(torch.full((1, 3, 2), 16))
    with pytest.raises(ValueError, match=r"codes\[None\]"):
        model.decode(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer codes"):
        model.decode(torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="K <= 3"):
        model.decode(torch.zeros(1, 4, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="num_samples"):
        model.decode(torch.zeros(1, 3, 2, dtype=torch.long), num_samples=2 * HOP + 1)


def test_float64_input_is_accepted() -> None:
    model = tiny_model("mel")
    wav = speech_like(HOP)
    with torch.inference_mode():
        torch.testing.assert_close(model(wav.double()).audio, model(wav).audio)


def test_inconsistent_config_is_rejected() -> None:
    config = tiny_config("waveform")
    bad = ModelConfig(encoder=config.encoder, decoder=DecoderConfig(channels=2, strides=(8, 5, 4)))
    with pytest.raises(ValueError, match="decoder upsamples"):
        VQVAE(bad)


@pytest.mark.parametrize("design", ["mel", "waveform"])
def test_a_few_training_steps_improve_reconstruction(design: str) -> None:
    """End to end: losses, straight-through gradients and the codebooks together make the model learn."""
    model = tiny_model(design).train()
    loss_fn = ReconstructionLoss(
        LossConfig(stft_fft_sizes=(256, 512), stft_hop_sizes=(64, 128), stft_win_sizes=(256, 512)), 16000
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.8, 0.99))
    held_out = speech_like(8000, seed=99)

    def distance() -> float:
        model.eval()
        with torch.inference_mode():
            value = float(mel_distance(model(held_out).audio, held_out, 16000))
        model.train()
        return value

    before = distance()
    for step in range(40):
        wav = speech_like(4000, batch=4, seed=step)
        out = model(wav)
        loss = loss_fn(out.audio, wav).total + out.quantizer.loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = distance()
    assert after < 0.8 * before, (before, after)  # untrained: about 1x; trained: 0.4-0.7x
