"""Render one synthetic song whose sound follows hidden valence/arousal trajectories.

The musical mapping (all driven by the *local* value of the trajectories, beat by beat):

- arousal (1..9) -> tempo, notes per beat, loudness, percussion (kick, snare, hi-hat) and
  spectral brightness (how slowly the harmonic amplitudes fall off);
- valence (1..9) -> mode (major vs minor/diminished chords, major vs minor melody scale),
  consonance (added semitone/tritone clashes and detuned, beating voices) and register.

Nuisance that carries no label: key, chord progression, melody, instrument timbres, attack,
panning, reverb, background noise level and the song's overall loudness.

Synthesis is wavetable-based at :data:`RENDER_SR` and resampled (soxr) to 44.1 kHz stereo.
Everything is drawn from the ``numpy.random.Generator`` passed in: same generator state ->
same samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft
import soxr

RENDER_SR = 22_050
OUT_SR = 44_100
TRAJ_HZ = 10.0  # sampling rate of the hidden trajectories

_TABLE = 2048
_MAX_HARM = 24
_SIN_TABLE = np.sin(
    2.0 * np.pi * np.arange(1, _MAX_HARM + 1)[:, None] * np.arange(_TABLE)[None, :] / _TABLE
).astype(np.float32)  # [harmonics, table]

_MAJOR_SCALE = np.array([0, 2, 4, 5, 7, 9, 11])
_MINOR_SCALE = np.array([0, 2, 3, 5, 7, 8, 10])  # natural minor
_PROGRESSIONS = ([0, 5, 7, 0], [0, 9, 5, 7], [0, 7, 9, 5], [0, 5, 0, 7], [0, 2, 7, 0], [0, 4, 5, 7])


@dataclass(frozen=True)
class Trajectory:
    """Hidden emotion of a song sampled at :data:`TRAJ_HZ`: ``times_s [N]``, values on 1..9."""

    times_s: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray

    def at(self, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """(valence, arousal) linearly interpolated at ``t`` seconds."""
        return (np.interp(t, self.times_s, self.valence), np.interp(t, self.times_s, self.arousal))


def _smooth_noise(rng: np.random.Generator, t: np.ndarray, min_period: float, max_period: float) -> np.ndarray:
    """Slow zero-mean, unit-std noise: a sum of 3 random sinusoids with periods in the range."""
    out = np.zeros_like(t)
    for _ in range(3):
        period = rng.uniform(min_period, max_period)
        out += rng.normal() * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    std = out.std()
    return out / std if std > 1e-9 else out


def hidden_trajectory(
    rng: np.random.Generator, duration_s: float, valence0: float, arousal0: float
) -> Trajectory:
    """Slowly drifting valence/arousal around the song's centre values (1..9 scale).

    About a third of the songs are nearly static; the others drift by up to ~1 point.
    """
    t = np.arange(0.0, duration_s + 1.0 / TRAJ_HZ, 1.0 / TRAJ_HZ)
    curves = []
    for centre in (valence0, arousal0):
        amp = rng.uniform(0.02, 0.12) if rng.random() < 0.35 else rng.uniform(0.2, 0.8)
        curve = centre + amp * _smooth_noise(rng, t, 15.0, 90.0)
        curves.append(np.clip(curve, 1.1, 8.9))
    return Trajectory(t, curves[0], curves[1])


def _midi_hz(m: np.ndarray | float) -> np.ndarray | float:
    return 440.0 * 2.0 ** ((np.asarray(m) - 69.0) / 12.0)


class _Mixer:
    """Stereo accumulation buffer at RENDER_SR with wavetable notes and sample-based hits."""

    def __init__(self, n: int):
        self.n = n
        self.buf = np.zeros((2, n), dtype=np.float32)

    def add(self, start: int, sig: np.ndarray, gain: float, pan: float) -> None:
        if start >= self.n or sig.size == 0:
            return
        sig = sig[: self.n - start]
        left, right = np.cos((pan + 1) * np.pi / 4), np.sin((pan + 1) * np.pi / 4)
        self.buf[0, start : start + sig.size] += (gain * left) * sig
        self.buf[1, start : start + sig.size] += (gain * right) * sig


def _note(freq: float, length: int, amps: np.ndarray, attack: int, tau: float, phase: float) -> np.ndarray:
    """One wavetable note: ``[length]`` float32 with harmonic amplitudes ``amps`` and an AD envelope."""
    k = int(min(_MAX_HARM, amps.size, max(1, (RENDER_SR / 2 - 200) // max(freq, 1.0))))
    table = amps[:k] @ _SIN_TABLE[:k]
    idx = (phase + np.arange(length, dtype=np.float64) * (freq * _TABLE / RENDER_SR)).astype(np.int64) % _TABLE
    env = np.exp(-np.arange(length, dtype=np.float32) / np.float32(tau * RENDER_SR))
    a = min(attack, length)
    env[:a] *= np.linspace(0.0, 1.0, a, dtype=np.float32)
    rel = min(length, int(0.01 * RENDER_SR))
    env[length - rel :] *= np.linspace(1.0, 0.0, rel, dtype=np.float32)
    return table[idx] * env


def _harmonics(timbre: np.ndarray, slope: float) -> np.ndarray:
    """Harmonic amplitudes ``k**-slope * timbre_k``, normalised to unit sum of squares."""
    k = np.arange(1, _MAX_HARM + 1, dtype=np.float32)
    amps = timbre * k ** (-slope)
    return (amps / np.sqrt(np.sum(amps**2))).astype(np.float32)


def _drum_samples(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Kick (pitch sweep), snare (tone + noise), hi-hat (bright noise) at RENDER_SR."""
    sr = RENDER_SR
    t = np.arange(int(0.25 * sr)) / sr
    f0 = rng.uniform(45, 65)
    kick = np.sin(2 * np.pi * np.cumsum(f0 + 90 * np.exp(-t / 0.03)) / sr) * np.exp(-t / 0.09)
    t = np.arange(int(0.2 * sr)) / sr
    snare = 0.5 * np.sin(2 * np.pi * rng.uniform(170, 230) * t) * np.exp(-t / 0.04)
    snare += rng.standard_normal(t.size) * np.exp(-t / rng.uniform(0.04, 0.08))
    t = np.arange(int(0.06 * sr)) / sr
    hat = np.diff(rng.standard_normal(t.size + 1)) * np.exp(-t / rng.uniform(0.01, 0.025))
    return {
        "kick": (kick / np.abs(kick).max()).astype(np.float32),
        "snare": (snare / np.abs(snare).max()).astype(np.float32),
        "hat": (hat / np.abs(hat).max()).astype(np.float32),
    }


def _beat_times(traj: Trajectory, duration_s: float, tempo_offset: float) -> np.ndarray:
    """Beat onsets (s): the tempo follows arousal, 62..164 bpm, plus a per-song offset."""
    times, t = [], 0.0
    while t < duration_s:
        times.append(t)
        _, a = traj.at(t)
        bpm = np.clip(62.0 + 12.5 * (float(a) - 1.0) + tempo_offset, 50.0, 190.0)
        t += 60.0 / bpm
    return np.asarray(times)


def render_song(rng: np.random.Generator, traj: Trajectory, duration_s: float) -> np.ndarray:
    """Render ``duration_s`` seconds following ``traj``: ``[T, 2]`` float32 at :data:`OUT_SR` Hz."""
    sr = RENDER_SR
    n = int(round(duration_s * sr))
    mix = _Mixer(n)
    # --- nuisance drawn once per song ---
    tonic_pc = int(rng.integers(0, 12))
    prog = _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))]
    # draw order matters (the corpus is defined by the RNG stream): harmonic levels first, then the odd/even tilt
    pad_timbre = rng.uniform(0.3, 1.0, _MAX_HARM).astype(np.float32)
    pad_timbre = pad_timbre * (1 + rng.uniform(-0.6, 0.6) * (np.arange(_MAX_HARM) % 2))
    lead_timbre = rng.uniform(0.3, 1.0, _MAX_HARM).astype(np.float32)
    slope_offset = rng.uniform(-0.35, 0.35)
    tempo_offset = rng.normal(0.0, 9.0)
    density_offset = rng.normal(0.0, 0.35)
    song_gain_db = rng.normal(0.0, 4.5)
    pan_pad, pan_lead = rng.uniform(-0.5, 0.5), rng.uniform(-0.6, 0.6)
    drums = _drum_samples(rng)
    melody_pos = int(rng.integers(0, 7))

    beats = _beat_times(traj, duration_s, tempo_offset)
    beat_len = np.diff(np.append(beats, duration_s))
    vals, aros = traj.at(beats)
    gain_wobble = 1.5 * _smooth_noise(rng, beats, 8.0, 30.0) if beats.size > 1 else np.zeros(1)
    for i, (t0, blen, v, a) in enumerate(zip(beats, beat_len, vals, aros)):
        alpha, beta = (a - 1.0) / 8.0, (v - 1.0) / 8.0
        level = 10 ** ((-24.0 + 17.0 * alpha + song_gain_db + gain_wobble[i]) / 20.0)
        slope = 2.3 - 1.9 * alpha + slope_offset
        start, length = int(t0 * sr), max(int(blen * sr), 32)
        attack = int(sr * (0.045 - 0.04 * alpha))
        # chord: quality from valence, register follows valence, dissonance when valence is low
        major = rng.random() < 1.0 / (1.0 + np.exp(-(beta - 0.5) * 9.0))
        root_pc = (tonic_pc + prog[(i // 4) % 4]) % 12
        target = 43.0 + 26.0 * beta
        root = root_pc + 12 * np.round((target - root_pc) / 12.0)
        if major:
            chord = [0, 4, 7, 12]
        elif beta < 0.3 and rng.random() < 0.6:
            chord = [0, 3, 6, 9]  # diminished
        else:
            chord = [0, 3, 7, 12]
        p_clash = 0.9 * (1.0 - beta) ** 1.5
        if rng.random() < p_clash:
            chord.append(int(rng.choice([1, 6, 11, 13])))
        detune_cents = 28.0 * (1.0 - beta) ** 1.5
        pad_amps = _harmonics(pad_timbre, slope)
        for iv in chord:
            cents = rng.uniform(-1, 1) * detune_cents
            f = float(_midi_hz(root + iv + cents / 100.0))
            sig = _note(f, length + int(0.05 * sr), pad_amps, attack, 0.4 + 0.9 * blen, rng.uniform(0, _TABLE))
            mix.add(start, sig, 0.22 * level, pan_pad)
        # melody: notes per beat from arousal, scale from valence
        n_sub = int(np.clip(np.round(1.0 + 3.2 * alpha + density_offset), 1, 4))
        scale = _MAJOR_SCALE if major else _MINOR_SCALE
        lead_amps = _harmonics(lead_timbre, slope + 0.2)
        sub_len = length // n_sub
        for j in range(n_sub):
            melody_pos = int(np.clip(melody_pos + rng.integers(-2, 3), -3, 10))
            deg = scale[melody_pos % 7] + 12 * (melody_pos // 7)
            f = float(_midi_hz(root - (root - tonic_pc) % 12 + 12 + deg))
            sig = _note(f, sub_len, lead_amps, attack // 2 + 16, 0.15 + 0.5 * blen / n_sub, 0.0)
            mix.add(start + j * sub_len, sig, 0.3 * level, pan_lead)
            if alpha > 0.55:  # hi-hat on every subdivision
                mix.add(start + j * sub_len, drums["hat"], 0.5 * level * (alpha - 0.45), -pan_lead)
        # percussion from arousal
        if alpha > 0.2 and i % 2 == 0:
            mix.add(start, drums["kick"], 0.8 * level * min(1.0, 1.6 * (alpha - 0.15)), 0.0)
        if alpha > 0.4 and i % 2 == 1:
            mix.add(start, drums["snare"], 0.45 * level * min(1.0, 2.0 * (alpha - 0.35)), 0.1)

    out = mix.buf
    # reverb: exponentially decaying noise, different per channel (FFT convolution, float32)
    tau = rng.uniform(0.08, 0.5)
    ir_t = np.arange(int(3 * tau * sr)) / sr
    wet = float(rng.uniform(0.05, 0.4))
    ir = (rng.standard_normal((2, ir_t.size)) * np.exp(-ir_t / tau)).astype(np.float32)
    ir /= np.sqrt(np.sum(ir**2, axis=1, keepdims=True))
    nfft = scipy.fft.next_fast_len(n + ir_t.size - 1, real=True)
    conv = scipy.fft.irfft(scipy.fft.rfft(out, nfft) * scipy.fft.rfft(ir, nfft), nfft)[:, :n]
    out = (1 - wet) * out + wet * conv
    # background (pinkish) noise at a random level
    noise_db = rng.uniform(-62.0, -36.0)
    spec = scipy.fft.rfft(rng.standard_normal((2, n), dtype=np.float32))
    spec /= np.sqrt(np.maximum(np.arange(spec.shape[1], dtype=np.float32), 1.0))
    noise = scipy.fft.irfft(spec, n)
    noise *= 10 ** (noise_db / 20.0) / (noise.std() + 1e-12)
    out = out + noise
    y = soxr.resample(out.T.astype(np.float32), sr, OUT_SR, quality="HQ")
    return (0.98 * np.tanh(y / 0.98)).astype(np.float32)  # soft limiter, no normalisation
