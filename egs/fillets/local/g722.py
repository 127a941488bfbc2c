"""ITU-T G.722 at 64 kbit/s (7 kHz audio coding, 1988): the raw ``.g722`` files of Asterisk's wideband prompts.

Neither soundfile nor sox reads G.722, and ffmpeg is not always installed, so the recipe decodes it here. The
codec splits 16 kHz audio with a 24-tap QMF into a low band (0-4 kHz, 6-bit ADPCM) and a high band (4-8 kHz,
2-bit ADPCM), one byte per pair of samples (``ihigh << 6 | ilow``). Each band has an adaptive pole-zero
predictor (two poles, six zeros) and a log-domain step size; encoder and decoder run the same adaptation on
the quantised differences, so they stay in step without side information. Block names (RECONS, UPPOL2, ...)
follow the Recommendation, and so does the integer arithmetic (16-bit saturation, ``>> 15`` products): a decoder
that rounds differently drifts away from the encoder's predictor. Both directions give FFmpeg's bytes and
samples exactly (checked on the Asterisk prompts and on random streams; tests/test_egs_fillets.py keeps a
hash). ``encode`` exists to make test files: sox cannot write G.722 either.

The loops are compiled with numba (a librosa dependency; about 8 s the first time, then cached in
__pycache__): under a second of CPU for an hour of audio.
"""

from __future__ import annotations

import numba
import numpy as np

SAMPLE_RATE = 16000
BYTES_PER_SECOND = 8000  # one byte per two samples at 64 kbit/s

# Inverse quantisers (the Recommendation's tables): 6-bit low band, its 4-bit core (used for adaptation,
# so 56 and 48 kbit/s streams decode with the same predictor), 2-bit high band; log step-size updates.
QM6 = np.array(
    [-136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192, -10232, -9360,
     -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168, -2776, -2400, -2032, -1688,
     -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512, 12280, 11192, 10232, 9360, 8576, 7856, 7192,
     6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168, 2776, 2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432,
     -136],
    dtype=np.int64,
)  # fmt: skip
QM4 = np.array(
    [0, -20456, -12896, -8968, -6288, -4240, -2584, -1200, 20456, 12896, 8968, 6288, 4240, 2584, 1200, 0],
    dtype=np.int64,
)
QM2 = np.array([-7408, -1616, 7408, 1616], dtype=np.int64)
RL42 = np.array([0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0], dtype=np.int64)
WL = np.array([-60, -30, 58, 172, 334, 538, 1198, 3042], dtype=np.int64)
RH2 = np.array([2, 1, 2, 1], dtype=np.int64)
WH = np.array([0, -214, 798], dtype=np.int64)
ILB = np.array(
    [2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774, 2834, 2896, 2960,
     3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838, 3922, 4008],
    dtype=np.int64,
)  # fmt: skip
QMF = np.array([3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11], dtype=np.int64)
# Encoder only: low-band decision thresholds and the codes of each interval (negative / positive error);
# high band: the codes of the small / large magnitude.
Q6 = np.array(
    [0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650, 714, 786, 858, 940, 1023, 1121,
     1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919],
    dtype=np.int64,
)  # fmt: skip
ILN = np.array([0, 63, 62, *range(31, 3, -1), 0], dtype=np.int64)
ILP = np.array([0, *range(61, 31, -1), 0], dtype=np.int64)
IHN = np.array([0, 1, 0], dtype=np.int64)
IHP = np.array([0, 3, 2], dtype=np.int64)

# Per-band state, one row per band (0 = low, 1 = high). Histories are numbered as in the Recommendation:
# R + 1 is the last reconstructed signal, R + 2 the one before; D + 1..D + 6 the last six differences.
S, SZ, NB, DET = 0, 1, 2, 3  # signal estimate, zero-section estimate, log step size, step size
R, P, A = 3, 5, 7  # reconstructed signal, partial signal (2 each); pole coefficients a1, a2
D, B = 9, 15  # quantised differences, zero coefficients b1..b6 (6 each)
STATE_SIZE = B + 7
INITIAL_DET = (32, 8)
NB_MAX = (18432, 22528)
SCALE_SHIFT = (8, 10)


@numba.njit(cache=True)
def _saturate(value: int) -> int:
    return max(-32768, min(32767, value))


@numba.njit(cache=True)
def _adapt(band: np.ndarray, dq: int) -> None:
    """Block 4: update one band's pole-zero predictor (its state row) with the quantised difference ``dq``."""
    reconstructed = _saturate(band[S] + dq)  # RECONS
    partial = _saturate(band[SZ] + dq)  # PARREC
    sign0, sign1, sign2 = partial >> 15, band[P + 1] >> 15, band[P + 2] >> 15
    # UPPOL2: second pole, leaky sign-sign update, |a2| <= 0.375
    wd = _saturate(band[A + 1] << 2)
    wd = min(-wd if sign0 == sign1 else wd, 32767)
    a2 = (128 if sign0 == sign2 else -128) + (wd >> 7) + ((band[A + 2] * 32512) >> 15)
    a2 = max(-12288, min(12288, a2))
    # UPPOL1: first pole, bounded so the two-pole section stays stable
    a1 = _saturate((192 if sign0 == sign1 else -192) + ((band[A + 1] * 32640) >> 15))
    limit = _saturate(15360 - a2)
    a1 = max(-limit, min(limit, a1))
    # UPZERO: six zeros, leaky sign-sign update against the past differences
    step = 0 if dq == 0 else 128
    for i in range(1, 7):
        same_sign = (band[D + i] >> 15) == (dq >> 15)
        band[B + i] = _saturate((step if same_sign else -step) + ((band[B + i] * 32640) >> 15))
    # DELAYA
    for i in range(6, 1, -1):
        band[D + i] = band[D + i - 1]
    band[D + 1] = dq
    band[R + 2], band[R + 1] = band[R + 1], reconstructed
    band[P + 2], band[P + 1] = band[P + 1], partial
    band[A + 1], band[A + 2] = a1, a2
    # FILTEZ, FILTEP, PREDIC
    zeros = 0
    for i in range(1, 7):
        zeros += (band[B + i] * _saturate(band[D + i] + band[D + i])) >> 15
    band[SZ] = _saturate(zeros)
    poles = _saturate(
        ((band[A + 1] * _saturate(band[R + 1] + band[R + 1])) >> 15)
        + ((band[A + 2] * _saturate(band[R + 2] + band[R + 2])) >> 15)
    )
    band[S] = _saturate(poles + band[SZ])


@numba.njit(cache=True)
def _update_scale(state: np.ndarray, band: int, index: int) -> None:
    """LOGSCL / LOGSCH: leaky log step size; SCALEL / SCALEH: the linear step size, via a 32-entry antilog."""
    weight = WL[RL42[index]] if band == 0 else WH[RH2[index]]
    nb = max(0, min(NB_MAX[band], ((state[band, NB] * 127) >> 7) + weight))
    state[band, NB] = nb
    exponent = SCALE_SHIFT[band] - (nb >> 11)
    mantissa = ILB[(nb >> 6) & 31]
    state[band, DET] = (mantissa << -exponent if exponent < 0 else mantissa >> exponent) << 2


def _new_state() -> np.ndarray:
    state = np.zeros((2, STATE_SIZE), dtype=np.int64)
    state[:, DET] = INITIAL_DET
    return state


@numba.njit(cache=True)
def _decode(codes: np.ndarray, state: np.ndarray) -> np.ndarray:
    out = np.empty(2 * codes.size, dtype=np.int16)
    x = np.zeros(24, dtype=np.int64)  # receive QMF history, oldest first
    for n in range(codes.size):
        code = int(codes[n])
        low, high = code & 0x3F, (code >> 6) & 0x03
        # low band: INVQBL with all 6 bits for the output, INVQAL with the 4-bit core for the adaptation
        low_out = max(-16384, min(16383, state[0, S] + ((state[0, DET] * QM6[low]) >> 15)))
        low_dq = (state[0, DET] * QM4[low >> 2]) >> 15
        _update_scale(state, 0, low >> 2)
        _adapt(state[0], low_dq)
        # high band: INVQAH, RECONS, LIMIT
        high_dq = (state[1, DET] * QM2[high]) >> 15
        high_out = max(-16384, min(16383, state[1, S] + high_dq))
        _update_scale(state, 1, high)
        _adapt(state[1], high_dq)
        # receive QMF: two output samples per code
        x[:22] = x[2:].copy()
        x[22], x[23] = low_out + high_out, low_out - high_out
        odd = 0
        even = 0
        for i in range(12):
            even += x[2 * i] * QMF[i]
            odd += x[2 * i + 1] * QMF[11 - i]
        out[2 * n] = _saturate(odd >> 11)
        out[2 * n + 1] = _saturate(even >> 11)
    return out


@numba.njit(cache=True)
def _encode(pcm: np.ndarray, state: np.ndarray) -> np.ndarray:
    codes = np.empty(pcm.size // 2, dtype=np.uint8)
    x = np.zeros(24, dtype=np.int64)  # transmit QMF history, oldest first
    for n in range(codes.size):
        x[:22] = x[2:].copy()
        x[22], x[23] = pcm[2 * n], pcm[2 * n + 1]
        odd = 0
        even = 0
        for i in range(12):
            odd += x[2 * i] * QMF[i]
            even += x[2 * i + 1] * QMF[11 - i]
        # low band: SUBTL, QUANTL (6 bits), INVQAL (4-bit core)
        error = _saturate(((even + odd) >> 14) - state[0, S])
        magnitude = error if error >= 0 else -(error + 1)
        interval = 1
        while interval < Q6.size and magnitude >= (Q6[interval] * state[0, DET]) >> 12:
            interval += 1
        low = ILN[interval] if error < 0 else ILP[interval]
        low_dq = (state[0, DET] * QM4[low >> 2]) >> 15
        _update_scale(state, 0, low >> 2)
        _adapt(state[0], low_dq)
        # high band: SUBTH, QUANTH (2 bits), INVQAH
        error = _saturate(((even - odd) >> 14) - state[1, S])
        magnitude = error if error >= 0 else -(error + 1)
        large = 2 if magnitude >= (564 * state[1, DET]) >> 12 else 1
        high = IHN[large] if error < 0 else IHP[large]
        high_dq = (state[1, DET] * QM2[high]) >> 15
        _update_scale(state, 1, high)
        _adapt(state[1], high_dq)
        codes[n] = (high << 6) | low
    return codes


def decode(data: bytes) -> np.ndarray:
    """A raw 64 kbit/s G.722 stream -> 16 kHz float32 samples in [-1, 1] (two per byte)."""
    codes = np.frombuffer(data, dtype=np.uint8)
    return _decode(codes, _new_state()).astype(np.float32) / 32768.0


def encode(audio: np.ndarray) -> bytes:
    """16 kHz float samples in [-1, 1] -> a raw 64 kbit/s G.722 stream (an odd last sample is dropped)."""
    pcm = np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32767.0), -32768, 32767).astype(np.int64)
    return _encode(pcm, _new_state()).tobytes()
