"""The demo corpus: deterministic, well-formed, and its labels recoverable from the raw signals."""

import dataclasses

import numpy as np
import pytest

from emotion_e2e.config import FaceConfig, TimeBase
from emotion_e2e.data import demo

TINY = demo.DemoConfig(num_train=3, num_dev=2, seconds=4.0)
# Enough frames and identities for stable pooled correlations; labels are cheap, faces ~0.3 ms each.
SMALL = demo.DemoConfig(num_train=6, num_dev=2, seconds=20.0)
TB = TimeBase()
IDENTITY_FIELDS = [f.name for f in dataclasses.fields(demo.DemoRecording)
                   if f.name not in ("recording_id", "partition", "label_seed")]


def _corr(a, b):
    return float(np.corrcoef(a, b)[0, 1])


def _all_frames(cfg, **kw):
    return {rec.recording_id: list(demo.frames(rec, cfg, **kw)) for rec in demo.demo_recordings(cfg)}


@pytest.fixture(scope="module")
def small():
    """Per frame of SMALL: labels (F, 2), audio (F, 640), mouth feature (F,), recording index (F,)."""
    ys, wavs, mouths, idx = [], [], [], []
    for k, rec in enumerate(demo.demo_recordings(SMALL)):
        for fr in demo.frames(rec, SMALL):
            ys.append([fr.labels[n] for n in demo.LABEL_NAMES])
            wavs.append(fr.audio)
            mouths.append(_mouth_feature(fr.face, rec))
            idx.append(k)
    return np.array(ys), np.stack(wavs).astype(np.float64), np.array(mouths), np.array(idx)


def _mouth_feature(img, rec):
    """How much lower the mouth's centre is than its corners (px): > 0 smile, < 0 frown.

    Darkness-weighted centroid row of a few columns at the centre and near the corners,
    located from the identity's geometry (the per-frame jitter is left as noise).
    """
    s = img.shape[0]
    cx, cy = (0.5 + rec.face_offset[0]) * s, (0.52 + rec.face_offset[1]) * s
    y0, half = int(round(cy + 0.52 * rec.face_axes[1] * s)), 0.5 * rec.face_axes[0] * s
    rows = np.arange(y0 - 12, y0 + 13)
    dark = 255.0 - img[rows].mean(-1)

    def centroid(x):
        w = dark[:, int(round(x)) - 2:int(round(x)) + 3].mean(1)
        w = np.maximum(w - np.median(w) - 20, 0)  # keep the lips, drop the skin
        return (w * rows).sum() / max(w.sum(), 1e-6)

    return centroid(cx) - (centroid(cx - half + 3) + centroid(cx + half - 3)) / 2


def _log_pitch(frames_, sr=16000, f_min=50, f_max=400, threshold=0.15):
    """YIN pitch estimate per row of ``frames_`` (F, 640): log2 Hz, shape (F,)."""
    win, hi, lo = frames_.shape[1] // 2, sr // f_min, sr // f_max
    d = np.stack([np.sum((frames_[:, :win] - frames_[:, t:t + win]) ** 2, 1) for t in range(1, hi)], 1)
    dn = d * np.arange(1, hi) / np.maximum(np.cumsum(d, 1), 1e-12)  # dn[:, t-1] is lag t
    taus = []
    for row in dn:
        below = np.nonzero(row[lo - 1:] < threshold)[0]
        t = lo - 1 + (below[0] if len(below) else np.argmin(row[lo - 1:]))
        while t + 1 < len(row) and row[t + 1] < row[t]:
            t += 1
        taus.append(t + 1)
    return np.log2(sr / np.array(taus))


def test_deterministic_and_seed_dependent():
    a, b = _all_frames(TINY), _all_frames(TINY)
    c = _all_frames(dataclasses.replace(TINY, seed=1))
    assert demo.demo_recordings(TINY) == demo.demo_recordings(TINY)
    for rid in a:
        for fa, fb in zip(a[rid], b[rid]):
            assert np.array_equal(fa.audio, fb.audio) and np.array_equal(fa.face, fb.face)
            assert fa.labels == fb.labels
        assert not np.array_equal(a[rid][5].audio, c[rid][5].audio)
        assert not np.array_equal(a[rid][5].face, c[rid][5].face)
        assert a[rid][5].labels != c[rid][5].labels


def test_shapes_dtypes_ranges():
    n = int(round(TINY.seconds / TB.frame_step))
    for rec in demo.demo_recordings(TINY):
        y = demo.labels(rec, TINY, TB)
        wav = demo.audio(rec, TINY, TB)
        assert y.shape == (n, 2) and y.dtype == np.float32 and np.abs(y).max() <= 1.0
        assert wav.shape == (n * TB.samples_per_frame,) and wav.dtype == np.float32
        assert np.abs(wav).max() <= 1.0 and np.abs(wav).max() > 0.05
        frs = list(demo.frames(rec, TINY, TB, FaceConfig()))
        assert [f.index for f in frs] == list(range(1, n + 1))
        assert frs[-1].time == pytest.approx(TINY.seconds)
        for i, f in enumerate(frs):
            assert f.audio.shape == (640,) and f.audio.dtype == np.float32
            assert f.face.shape == (96, 96, 3) and f.face.dtype == np.uint8 and f.face_found is True
            assert f.labels == {"arousal": float(y[i, 0]), "valence": float(y[i, 1])}
        assert np.array_equal(np.concatenate([f.audio for f in frs]), wav)
        assert np.array_equal(frs[9].face, demo.face(rec, float(y[9, 1]), 10, TINY))


def test_modalities_and_face_size():
    rec = demo.demo_recordings(TINY)[0]
    f = next(demo.frames(rec, TINY, modalities=("audio",)))
    assert f.face is None and f.audio.shape == (640,)
    f = next(demo.frames(rec, TINY, face_cfg=FaceConfig(size=64), modalities=("face",)))
    assert f.audio is None and f.face.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="sound"):
        next(demo.frames(rec, TINY, modalities=("sound",)))


def test_recordings_ids_partitions_and_disjoint_identities():
    recs = demo.demo_recordings(SMALL)
    assert [r.partition for r in recs] == ["train"] * 6 + ["dev"] * 2
    assert len({r.recording_id for r in recs}) == len(recs)
    assert recs[0].recording_id == "train_000" and recs[-1].recording_id == "dev_001"
    ident = lambda r: tuple(getattr(r, k) for k in IDENTITY_FIELDS)  # noqa: E731
    train = {ident(r) for r in recs if r.partition == "train"}
    dev = {ident(r) for r in recs if r.partition == "dev"}
    assert len(train) == 6 and len(dev) == 2 and not train & dev
    for k in IDENTITY_FIELDS:  # every identity parameter actually varies
        assert len({getattr(r, k) for r in recs}) > 1, k
    assert len({r.label_seed for r in recs}) == len(recs)


def test_config_validation_names_received_values():
    with pytest.raises(ValueError, match="num_train=0"):
        demo.DemoConfig(num_train=0)
    with pytest.raises(ValueError, match=r"voice_rms=\(0.5, 0.2\)"):
        demo.DemoConfig(voice_rms=(0.5, 0.2))
    with pytest.raises(ValueError, match="envelope_depth=1.5"):
        demo.DemoConfig(envelope_depth=1.5)


def test_labels_smooth_and_independent(small):
    y, _, _, idx = small
    assert abs(_corr(y[:, 0], y[:, 1])) < 0.3
    assert 0.3 < y.std(0).min() and y.std(0).max() < 0.7  # fill the range, roughly in [-1, 1]
    step = np.abs(np.diff(y, axis=0))[np.diff(idx) == 0]
    assert step.max() < 0.1  # a few seconds' time scale: < 0.1 per 40 ms


def test_arousal_recoverable_from_audio_only(small):
    y, wav, _, idx = small
    log_rms = np.log(np.sqrt(np.mean(wav ** 2, 1)))
    assert _corr(log_rms, y[:, 0]) > 0.8  # pooled over identities
    assert abs(_corr(log_rms, y[:, 1])) < 0.3
    sub = slice(None, None, 4)
    for k in np.unique(idx)[:3]:  # pitch follows arousal within a speaker
        m = idx[sub] == k
        assert _corr(_log_pitch(wav[sub][m]), y[sub][m, 0]) > 0.9


def test_valence_recoverable_from_faces_only(small):
    y, _, mouth, _ = small
    assert _corr(mouth, y[:, 1]) > 0.8
    assert abs(_corr(mouth, y[:, 0])) < 0.3


def test_identities_and_expressions_change_the_face():
    recs = demo.demo_recordings(TINY)
    a, b = demo.face(recs[0], 0.5, 3, TINY), demo.face(recs[1], 0.5, 3, TINY)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 10
    smile, frown = demo.face(recs[0], 1.0, 3, TINY), demo.face(recs[0], -1.0, 3, TINY)
    assert np.abs(smile.astype(int) - frown.astype(int)).mean() > 2
