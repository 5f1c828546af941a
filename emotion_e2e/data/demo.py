"""Synthetic demo corpus whose labels can be recovered from the raw signals (docs/design.md §4).

Arousal drives a speech-like voice (pitch, loudness, syllable rate); valence drives a
cartoon face (mouth curvature, brow slant). Each recording has its own identity (voice
and face parameters), so a model has to learn the expression cue rather than recognise
the speaker. Both label tracks are smooth random trajectories drawn from separate
random streams, hence independent of each other. Everything is a pure function of
``DemoConfig.seed``: same seed, same bytes.

Identities: recording ``k`` of partition ``p`` draws its parameters from the stream
``[seed, p, k]`` (with p = 0 for train and 1 for dev), so dev identities are separate
random draws from train ones, i.e. speakers never seen in training.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import cv2
import numpy as np

from emotion_e2e.config import MODALITIES, FaceConfig, TimeBase, check_modalities

LABEL_NAMES = ("arousal", "valence")
PARTITIONS = ("train", "dev")  # index = partition code in the identity stream
_STREAM_AUDIO, _STREAM_FACE = 101, 102  # stream tags next to a recording's label_seed

# Identity ranges: moderate nuisance, small next to the expression cues.
NUM_HARMONICS = 12  # at most ~260 Hz × 12 ≈ 3 kHz, far below Nyquist
BASE_PITCH_HZ = (95.0, 190.0)  # f0 at arousal 0
SPECTRAL_TILT = (0.7, 1.5)  # harmonic k has weight ~ k^-tilt (dark vs bright voices)
VOICE_GAIN = (0.85, 1.15)  # speaker loudness, ±1.2 dB
VOICE_NOISE = (0.002, 0.008)  # std of the additive white noise (full scale = 1)
SKIN_LIGHT, SKIN_DARK = (235, 200, 175), (120, 80, 60)  # RGB; skin tone interpolates
FACE_AXES = ((0.30, 0.37), (0.38, 0.44))  # ellipse half-axes (x, y) as fractions of the image side
FACE_OFFSET = 0.05  # identity offset of the face centre, ± fraction of the side
IMAGE_NOISE = (2.0, 7.0)  # std of the (uniform) pixel noise in grey levels
FLICKER = 0.03  # per-frame illumination gain std
_SHIFT = 4  # cv2 fractional bits: sub-pixel, anti-aliased drawing
_ONE = 1 << _SHIFT


def _fail(msg):
    raise ValueError(f"DemoConfig: {msg}")


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Size of the demo corpus and strength of its cues (labels are in [-1, 1])."""

    seed: int = 0
    num_train: int = 32  # recordings (= identities) in train
    num_dev: int = 8  # recordings of other identities in dev
    seconds: float = 40.0  # length of every recording
    label_periods: tuple[float, float] = (3.0, 12.0)  # periods (s) of the label sinusoids
    label_components: int = 4  # sinusoids summed per label track
    pitch_octaves: float = 0.5  # f0 = base · 2^(pitch_octaves · arousal)
    voice_rms: tuple[float, float] = (0.02, 0.25)  # voice RMS at arousal -1 and +1 (linear between)
    syllable_rate_hz: tuple[float, float] = (2.0, 7.0)  # syllables/s at arousal -1 and +1
    envelope_depth: float = 0.35  # how far the envelope dips between syllables (0..1)
    mouth_curvature: float = 0.10  # centre-to-corner height of the mouth at |valence| = 1, × side
    brow_slant: float = 0.05  # inner brow end raise at valence +1 (lowered at -1), × side
    face_jitter: float = 0.01  # per-frame std of the face position, × side

    def __post_init__(self):
        for name in ("label_periods", "voice_rms", "syllable_rate_hz"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if self.num_train < 1 or self.num_dev < 0 or self.seconds <= 0:
            _fail(f"need num_train >= 1, num_dev >= 0, seconds > 0. Received: num_train={self.num_train}, "
                  f"num_dev={self.num_dev}, seconds={self.seconds}")
        lo, hi = self.label_periods
        if not 0 < lo <= hi or self.label_components < 1:
            _fail(f"need 0 < label_periods[0] <= label_periods[1] and label_components >= 1. Received: "
                  f"label_periods={self.label_periods}, label_components={self.label_components}")
        (r0, r1), (s0, s1) = self.voice_rms, self.syllable_rate_hz
        if not (0 < r0 < r1 <= 0.3 and 0 < s0 <= s1):  # RMS <= 0.3 leaves room for the voice's peaks
            _fail(f"need 0 < voice_rms[0] < voice_rms[1] <= 0.3 and 0 < syllable_rate_hz[0] <= syllable_rate_hz[1]. "
                  f"Received: voice_rms={self.voice_rms}, syllable_rate_hz={self.syllable_rate_hz}")
        if not 0 <= self.pitch_octaves <= 1 or not 0 <= self.envelope_depth < 1:
            _fail(f"need 0 <= pitch_octaves <= 1 and 0 <= envelope_depth < 1. Received: "
                  f"pitch_octaves={self.pitch_octaves}, envelope_depth={self.envelope_depth}")
        # Upper bounds keep the mouth, brows and face inside the image.
        if not (0 <= self.mouth_curvature <= 0.2 and 0 <= self.brow_slant <= 0.1 and 0 <= self.face_jitter <= 0.05):
            _fail(f"need mouth_curvature in [0, 0.2], brow_slant in [0, 0.1], face_jitter in [0, 0.05]. "
                  f"Received: mouth_curvature={self.mouth_curvature}, brow_slant={self.brow_slant}, "
                  f"face_jitter={self.face_jitter}")


@dataclasses.dataclass(frozen=True)
class DemoRecording:
    """One recording = one identity. Colours are RGB 0..255; geometry is in fractions of the image side.

    ``label_seed`` seeds the label trajectories; the audio noise and the per-frame face
    nuisances use their own streams next to it (``[label_seed, tag, ...]``).
    """

    recording_id: str
    partition: str
    label_seed: int
    base_pitch_hz: float
    harmonic_weights: tuple[float, ...]  # NUM_HARMONICS weights, scaled so the voice has unit RMS
    voice_gain: float
    voice_noise: float
    face_axes: tuple[float, float]
    face_offset: tuple[float, float]
    skin_rgb: tuple[int, int, int]
    hair_rgb: tuple[int, int, int]
    lip_rgb: tuple[int, int, int]
    background_rgb: tuple[int, int, int]
    image_noise: float


@dataclasses.dataclass(frozen=True)
class DemoFrame:
    """Frame ``index`` (1-based) covering ``(time - frame_step, time]``."""

    index: int
    time: float
    audio: np.ndarray | None  # (samples_per_frame,) float32 in [-1, 1]
    face: np.ndarray | None  # (size, size, 3) uint8 RGB
    face_found: bool
    labels: dict  # {'arousal': float, 'valence': float}


def _identity(rng, recording_id, partition):
    tilt = rng.uniform(*SPECTRAL_TILT)
    k = np.arange(1, NUM_HARMONICS + 1)
    w = k ** -tilt * rng.uniform(0.5, 1.5, NUM_HARMONICS)
    w /= np.sqrt(np.sum(w ** 2) / 2)  # sum of sines with amplitudes w has RMS sqrt(sum w²/2) = 1
    skin = np.add(SKIN_LIGHT, rng.uniform() * np.subtract(SKIN_DARK, SKIN_LIGHT))
    rgb = lambda lo, hi: tuple(int(v) for v in rng.integers(lo, hi, 3))  # noqa: E731
    return DemoRecording(
        recording_id=recording_id, partition=partition, label_seed=int(rng.integers(2 ** 62)),
        base_pitch_hz=float(rng.uniform(*BASE_PITCH_HZ)), harmonic_weights=tuple(float(v) for v in w),
        voice_gain=float(rng.uniform(*VOICE_GAIN)), voice_noise=float(rng.uniform(*VOICE_NOISE)),
        face_axes=(float(rng.uniform(*FACE_AXES[0])), float(rng.uniform(*FACE_AXES[1]))),
        face_offset=tuple(float(v) for v in rng.uniform(-FACE_OFFSET, FACE_OFFSET, 2)),
        skin_rgb=tuple(int(v) for v in skin + rng.integers(-8, 9, 3)),
        hair_rgb=rgb(10, 120), lip_rgb=tuple(int(v) for v in rng.integers((60, 5, 15), (110, 30, 40))),  # dark red
        background_rgb=rgb(30, 226), image_noise=float(rng.uniform(*IMAGE_NOISE)))


def demo_recordings(cfg: DemoConfig) -> list[DemoRecording]:
    """``num_train`` train then ``num_dev`` dev recordings, ids ``train_000``…, ``dev_000``…."""
    out = []
    for code, (partition, count) in enumerate(zip(PARTITIONS, (cfg.num_train, cfg.num_dev))):
        for k in range(count):
            out.append(_identity(np.random.default_rng([cfg.seed, code, k]), f"{partition}_{k:03d}", partition))
    return out


def _num_frames(cfg, time_base):
    return time_base.frames_in(cfg.seconds)


def _trajectory(rec, cfg, time_base, dim, t):
    """Label track ``dim`` (0 arousal, 1 valence) at times ``t`` (s): a sum of random sinusoids
    scaled so its peak on the frame grid is 1. Each dim has its own stream → independent tracks."""
    rng = np.random.default_rng([rec.label_seed, dim])
    n = cfg.label_components
    freq = 1.0 / rng.uniform(*cfg.label_periods, n)
    amp, phase = rng.uniform(0.5, 1.0, n), rng.uniform(0, 2 * np.pi, n)
    f = lambda tt: sum(a * np.sin(2 * np.pi * fk * tt + p) for a, fk, p in zip(amp, freq, phase))  # noqa: E731
    grid = time_base.frame_time(np.arange(1, _num_frames(cfg, time_base) + 1))
    return np.clip(f(np.asarray(t, np.float64)) / np.max(np.abs(f(grid))), -1.0, 1.0)


def labels(rec: DemoRecording, cfg: DemoConfig, time_base: TimeBase = TimeBase()) -> np.ndarray:
    """``(N, 2)`` float32 [arousal, valence] in [-1, 1]; row i-1 is the value at time frame_step·i."""
    t = time_base.frame_time(np.arange(1, _num_frames(cfg, time_base) + 1))
    return np.stack([_trajectory(rec, cfg, time_base, d, t) for d in range(2)], axis=1).astype(np.float32)


def audio(rec: DemoRecording, cfg: DemoConfig, time_base: TimeBase = TimeBase()) -> np.ndarray:
    """``(N · samples_per_frame,)`` float32 in [-1, 1] at ``time_base.sample_rate``.

    Sample n (0-based) sits at time (n + 1) / sample_rate, so frame i holds the samples of
    (frame_step·(i-1), frame_step·i] and its cues (pitch, loudness: instantaneous) follow the
    arousal inside that interval, which is its label up to 40 ms of a slow trajectory.
    """
    sr = time_base.sample_rate
    t = np.arange(1, _num_frames(cfg, time_base) * time_base.samples_per_frame + 1) / sr
    a = _trajectory(rec, cfg, time_base, 0, t)
    up = (a + 1) / 2  # 0 at arousal -1, 1 at +1
    rate = cfg.syllable_rate_hz[0] + up * (cfg.syllable_rate_hz[1] - cfg.syllable_rate_hz[0])
    syl = 2 * np.pi * np.cumsum(rate) / sr  # integrated → continuous syllable phase
    # Envelope dips briefly once per syllable (raised cosine to the 4th: short gaps, long nuclei).
    env = 1 - cfg.envelope_depth * ((1 + np.cos(syl)) / 2) ** 4
    # Pitch: arousal sets the register, each syllable adds a small rise-fall (intonation).
    f0 = rec.base_pitch_hz * 2 ** (cfg.pitch_octaves * a) * (1 + 0.03 * np.sin(syl))
    phase = 2 * np.pi * np.cumsum(f0) / sr  # continuous phase: no clicks when f0 changes
    rng = np.random.default_rng([rec.label_seed, _STREAM_AUDIO])
    # voice = sum_k w_k sin(k·phase + p_k) = Im(sum_k c_k z^k) with z = e^{i·phase};
    # Horner's rule costs one complex exp instead of NUM_HARMONICS sines (3x faster).
    coef = np.asarray(rec.harmonic_weights) * np.exp(1j * rng.uniform(0, 2 * np.pi, NUM_HARMONICS))
    z = np.exp(1j * phase)
    acc = np.full(t.shape, coef[-1])
    for c in coef[-2::-1]:
        acc *= z
        acc += c
    voice = (acc * z).imag
    loud = cfg.voice_rms[0] + up * (cfg.voice_rms[1] - cfg.voice_rms[0])  # RMS linear in arousal
    x = rec.voice_gain * loud * env * voice + rec.voice_noise * rng.standard_normal(t.size)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def _pt(x, y):
    return int(round(x * _ONE)), int(round(y * _ONE))


def face(rec: DemoRecording, valence: float, frame_index: int, cfg: DemoConfig,
         face_cfg: FaceConfig = FaceConfig()) -> np.ndarray:
    """``(size, size, 3)`` uint8 RGB face with the expression of ``valence``; independent of arousal.

    ``frame_index`` seeds the per-frame nuisances (position jitter, illumination, pixel noise).
    """
    s = face_cfg.size
    rng = np.random.default_rng([rec.label_seed, _STREAM_FACE, frame_index])
    v = float(np.clip(valence, -1, 1))
    img = np.empty((s, s, 3), np.uint8)
    img[:] = rec.background_rgb
    jx, jy = rng.normal(0, cfg.face_jitter, 2)
    cx, cy = (0.5 + rec.face_offset[0] + jx) * s, (0.52 + rec.face_offset[1] + jy) * s
    ax, ay = rec.face_axes[0] * s, rec.face_axes[1] * s
    aa, thick = cv2.LINE_AA, max(1, round(0.035 * s))
    cv2.ellipse(img, _pt(cx, cy), _pt(ax, ay), 0, 0, 360, rec.skin_rgb, -1, aa, _SHIFT)
    # Hair: upper half-ellipse over the top of the head.
    cv2.ellipse(img, _pt(cx, cy - 0.5 * ay), _pt(1.04 * ax, 0.57 * ay), 0, 180, 360, rec.hair_rgb, -1, aa, _SHIFT)
    for side in (-1, 1):
        ex, ey = cx + side * 0.4 * ax, cy - 0.1 * ay
        cv2.ellipse(img, _pt(ex, ey), _pt(0.17 * ax, 0.09 * ay), 0, 0, 360, (245, 245, 245), -1, aa, _SHIFT)
        cv2.circle(img, _pt(ex, ey), int(0.075 * ax * _ONE), (30, 25, 20), -1, aa, _SHIFT)
        # Brows: raised (inner end most) for positive valence, lowered inner end (a frown) for negative.
        by, lift = ey - 0.2 * ay, cfg.brow_slant * s * v
        cv2.line(img, _pt(cx + side * 0.15 * ax, by - lift), _pt(cx + side * 0.62 * ax, by - 0.4 * lift),
                 rec.hair_rgb, thick, aa, _SHIFT)
    nose_rgb = (0.7 * np.array(rec.skin_rgb)).tolist()  # a shade of the skin
    cv2.line(img, _pt(cx, cy + 0.05 * ay), _pt(cx - 0.06 * ax, cy + 0.28 * ay), nose_rgb, max(1, thick // 2),
             aa, _SHIFT)
    # Mouth: parabola, corners up / centre down for a smile (v > 0), the reverse for a frown.
    u = np.linspace(-1, 1, 15)
    my = cy + 0.52 * ay - cfg.mouth_curvature * s * v * (u ** 2 - 1 / 3)  # mean height stays put
    pts = np.round(np.stack([cx + 0.5 * ax * u, my], 1) * _ONE).astype(np.int32)
    cv2.polylines(img, [pts], False, rec.lip_rgb, max(2, round(0.05 * s)), aa, _SHIFT)
    # Uniform pixel noise with std image_noise (5x cheaper to draw than Gaussian; +0.5 rounds).
    noise = (rng.random(img.shape, np.float32) - 0.5) * (np.sqrt(12) * rec.image_noise) + 0.5
    out = img.astype(np.float32) * np.float32(1 + rng.normal(0, FLICKER)) + noise
    return np.clip(out, 0, 255).astype(np.uint8)


def frames(rec: DemoRecording, cfg: DemoConfig, time_base: TimeBase = TimeBase(),
           face_cfg: FaceConfig = FaceConfig(), modalities=MODALITIES) -> Iterator[DemoFrame]:
    """Frames i = 1..N in order; faces are drawn on demand, the (short) audio is synthesised at once."""
    modalities = check_modalities(modalities, "demo.frames")
    y = labels(rec, cfg, time_base)
    spf = time_base.samples_per_frame
    wav = audio(rec, cfg, time_base) if "audio" in modalities else None
    for i in range(1, len(y) + 1):
        yield DemoFrame(
            index=i, time=float(time_base.frame_time(i)),
            audio=None if wav is None else wav[(i - 1) * spf:i * spf],
            face=face(rec, float(y[i - 1, 1]), i, cfg, face_cfg) if "face" in modalities else None,
            face_found=True, labels=dict(zip(LABEL_NAMES, map(float, y[i - 1]))))
