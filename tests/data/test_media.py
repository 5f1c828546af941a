"""emotion_e2e.data.media on real files written with PyAV in tmp_path."""

from __future__ import annotations

import math
import os
import re
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from emotion_e2e.config import TimeBase
from emotion_e2e.data import media
from emotion_e2e.errors import DataError
from face_fixtures import face_patch, phone_portraits
from media_fixtures import (colour, decode_k, dominant, phone_matrix, set_display_matrix, sine, stepped_tone,
                            write_audio, write_av, write_phone_video, write_video)

TB = TimeBase()
SR, SPF, STEP = TB.sample_rate, TB.samples_per_frame, Fraction(1, 25)


# ------------------------------------------------------------------ resampling

@pytest.mark.parametrize("rate_in,rate_out", [(44100, 16000), (48000, 16000), (8000, 16000),
                                              (22050, 16000), (16000, 16000), (16000, 44100)])
@pytest.mark.parametrize("chunking", ["1", "7", "640", "huge", "random"])
def test_streaming_resampler_equals_one_shot(rate_in, rate_out, chunking):
    rng = np.random.default_rng(0)
    n = 1500 if chunking == "1" else 9001
    x = rng.uniform(-1, 1, n).astype(np.float32)
    sizes = {"1": [1] * n, "7": [7] * (n // 7 + 1), "640": [640] * (n // 640 + 1), "huge": [10 * n],
             "random": list(rng.integers(0, 3000, 40))}[chunking]
    r, pos, outs = media.StreamingResampler(rate_in, rate_out), 0, []
    for size in sizes:
        outs.append(r.push(x[pos:pos + size]))
        pos += size
    outs.append(r.push(x[pos:]))
    outs.append(r.flush())
    got, want = np.concatenate(outs), media.resample(x, rate_in, rate_out)
    assert got.dtype == want.dtype == np.float32
    assert len(want) == math.ceil(n * rate_out / rate_in)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_audio_frames_resample_keeps_frequency_and_amplitude(tmp_path, rate):
    n = rate  # 1 s
    path = write_audio(tmp_path / f"sine{rate}.wav", sine(1000, n, rate), rate)
    frames = list(media.audio_frames(path, TB))
    assert all(f.shape == (SPF,) and f.dtype == np.float32 for f in frames)
    assert len(frames) == math.ceil(math.ceil(n * SR / rate) / SPF)
    y = np.concatenate(frames)[SR // 4: 3 * SR // 4]  # away from the edges
    assert abs(dominant(y, SR) - 1000) <= 2
    assert abs(np.sqrt(2 * np.mean(y ** 2)) - 0.5) < 0.005
    assert np.max(np.abs(y)) <= 1


@pytest.mark.parametrize("codec,fmt,ext,tol", [("pcm_s32le", "s32", "wav", 0.01), ("pcm_f32le", "flt", "wav", 0.01),
                                               ("pcm_u8", "u8", "wav", 0.02), ("flac", "s16", "flac", 0.01),
                                               ("aac", "fltp", "mp4", 0.05)])
def test_audio_sample_formats_and_containers(tmp_path, codec, fmt, ext, tol):
    path = write_audio(tmp_path / f"a.{ext}", sine(1000, 44100, 44100), 44100, codec=codec, fmt=fmt)
    y = np.concatenate(list(media.audio_frames(path, TB)))[SR // 4: 3 * SR // 4]
    assert abs(dominant(y, SR) - 1000) <= 2
    assert abs(np.sqrt(2 * np.mean(y ** 2)) / 0.5 - 1) < tol


def test_stereo_is_averaged(tmp_path):
    x = np.stack([sine(1000, 48000, 48000, 0.6), sine(1000, 48000, 48000, 0.2)], 1)
    path = write_audio(tmp_path / "stereo.wav", x, 48000)
    y = np.concatenate(list(media.audio_frames(path, TB)))[SR // 4: 3 * SR // 4]
    assert abs(np.sqrt(2 * np.mean(y ** 2)) - 0.4) < 0.004  # mean of channels, not an FFmpeg downmix


# ------------------------------------------------------------------ alignment

@pytest.mark.parametrize("rate", [16000, 48000])
def test_audio_frame_i_holds_segment_i(tmp_path, rate):
    path = write_audio(tmp_path / f"steps{rate}.wav", stepped_tone(rate, 20), rate)
    frames = list(media.audio_frames(path, TB))
    assert len(frames) == 20
    for i, f in enumerate(frames, 1):
        assert dominant(f, SR) == 500 + 250 * (i - 1), f"frame {i}"
    if rate == SR:  # no resampling: frame i is exactly segment i
        ref = stepped_tone(rate, 20).astype(np.float32).reshape(20, SPF)
        np.testing.assert_allclose(np.stack(frames), ref, atol=1 / 32767 + 1e-6)


def expected_indices(times, n):
    """For grid i = 1..n: index of the last frame with time <= i/25 (first frame if none)."""
    out = []
    for i in range(1, n + 1):
        ks = [k for k, t in enumerate(times) if t <= i * STEP]
        out.append(ks[-1] if ks else 0)
    return out


@pytest.mark.parametrize("fps", [Fraction(25), Fraction(30), Fraction(24000, 1001)])
def test_video_grid_uses_last_earlier_frame(tmp_path, fps):
    count = 61
    time_base = 1 / fps
    path = write_video(tmp_path / "v.mov", list(range(count)), time_base)
    times = [k * time_base for k in range(count)]
    duration = count * time_base
    assert media.video_duration(path) == pytest.approx(float(duration), abs=1e-9)
    n = TB.frames_in(float(duration))
    got = [decode_k(f) for f in media.video_frames(path, TB)]
    assert got == expected_indices(times, n)
    # Past the end the last frame is held; asking for fewer stops early.
    more = [decode_k(f) for f in media.video_frames(path, TB, num_frames=n + 5)]
    assert more == got + [count - 1] * 5
    assert [decode_k(f) for f in media.video_frames(path, TB, num_frames=7)] == got[:7]


def test_video_variable_frame_rate_and_late_first_frame(tmp_path):
    # Irregular timestamps (nominal 25 fps is wrong) and a first frame at 0 while
    # the second jumps: the decoded timestamps alone decide.
    pts = [0, 3000, 3600, 9000, 9001, 12000, 21600, 21700, 36000]  # 1/90000 s units
    tb = Fraction(1, 90000)
    path = write_video(tmp_path / "vfr.mov", pts, tb)
    times = [p * tb for p in pts]
    got = [decode_k(f) for f in media.video_frames(path, TB, num_frames=12)]
    assert got == expected_indices(times, 12)


def test_video_times_are_relative_to_stream_start(tmp_path):
    # First frame at 0.4 s and a missing frame: time 0 is the stream start.
    path = write_video(tmp_path / "late.nut", [10, 11, 12, 14, 15], Fraction(1, 25), codec="ffv1", pix_fmt="bgr0")
    assert media.video_duration(path) == pytest.approx(0.24)
    assert [decode_k(f) for f in media.video_frames(path, TB)] == [1, 2, 2, 3, 4, 4]


def test_video_h264_with_b_frames(tmp_path):
    path = write_video(tmp_path / "x.mp4", list(range(45)), Fraction(1, 30), codec="libx264", pix_fmt="yuv444p")
    frames = list(media.video_frames(path, TB))
    assert frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    assert [decode_k(f) for f in frames] == expected_indices([Fraction(k, 30) for k in range(45)], len(frames))
    assert len(frames) == TB.frames_in(1.5)


# ------------------------------------------------------------------ display orientation

PHONE_FRAMES = 12
CODEC_NOISE = 2  # mean |difference| of an H.264 4:4:4 qp 0 round trip (RGB -> YUV -> RGB)
ONE = 1 << 16


def mean_abs_diff(a, b):
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def upright():
    return phone_portraits(PHONE_FRAMES)


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_phone_video_with_a_rotation_flag_comes_out_upright(tmp_path, upright, degrees):
    path = write_phone_video(tmp_path / f"phone{degrees}.mp4", upright, degrees)
    with av.open(path) as c:  # FFmpeg sees the flag: its angle is counter-clockwise
        assert next(c.decode(video=0)).rotation % 360 == -degrees % 360
    frames = list(media.video_frames(path, TB))
    assert len(frames) == PHONE_FRAMES
    for i, frame in enumerate(frames, 1):  # grid frame i shows video frame i (the last one held)
        want = upright[min(i, PHONE_FRAMES - 1)]
        assert frame.shape == want.shape and frame.dtype == np.uint8, f"frame {i}"
        assert frame.flags.c_contiguous and not frame.flags.writeable
        assert mean_abs_diff(frame, want) < CODEC_NOISE, f"frame {i}"
        assert mean_abs_diff(frame, np.rot90(want, 2)) > 20 * CODEC_NOISE  # a turn the wrong way


# Every turn and mirror image a display matrix can hold (a, b, c, d of 16.16 fixed point) with what
# FFmpeg's autorotate (fftools) does with it: its transpose filter's direction or h/vflip.
AUTOROTATE = {
    "identity": ((1, 0, 0, 1), lambda s: s),
    "clock": ((0, 1, -1, 0), lambda s: np.rot90(s, -1)),
    "cclock_flip": ((0, 1, 1, 0), lambda s: s.transpose(1, 0, 2)),
    "hflip,vflip": ((-1, 0, 0, -1), lambda s: s[::-1, ::-1]),
    "hflip": ((-1, 0, 0, 1), lambda s: s[:, ::-1]),
    "cclock": ((0, -1, 1, 0), lambda s: np.rot90(s, 1)),
    "clock_flip": ((0, -1, -1, 0), lambda s: np.rot90(s, -1)[::-1]),
    "vflip": ((1, 0, 0, -1), lambda s: s[::-1]),
}


@pytest.mark.parametrize("name", AUTOROTATE)
def test_display_matrices_turn_and_mirror_as_ffmpeg_autorotate(tmp_path, name):
    (a, b, c, d), autorotate = AUTOROTATE[name]
    stored = cv2.resize(face_patch(), (64, 48), interpolation=cv2.INTER_AREA)  # no symmetry
    path = write_av(tmp_path / "m.mp4", [stored] * 3, 25)
    set_display_matrix(path, [a * ONE, b * ONE, 0, c * ONE, d * ONE, 0, 0, 0, 1 << 30])
    want = autorotate(stored)
    for frame in media.video_frames(path, TB):
        assert frame.shape == want.shape
        assert mean_abs_diff(frame, want) < CODEC_NOISE


def test_video_without_a_rotation_flag_is_decoded_as_before(tmp_path, upright):
    """No flag, or one that says "as stored": the frames are FFmpeg's RGB pictures, byte for byte."""
    plain = write_video(tmp_path / "plain.mp4", list(range(PHONE_FRAMES)), Fraction(1, 25), codec="libx264",
                        pix_fmt="yuv420p", size=upright[0].shape[:2])
    flagged = write_av(tmp_path / "flag0.mp4", upright, 25)
    set_display_matrix(flagged, phone_matrix(0, *upright[0].shape[:2]))
    for path in (plain, flagged):
        with av.open(path) as c:
            decoded = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        got = list(media.video_frames(path, TB))
        assert len(got) == PHONE_FRAMES
        for i, frame in enumerate(got, 1):
            np.testing.assert_array_equal(frame, decoded[min(i, PHONE_FRAMES - 1)])


@pytest.mark.parametrize("flag", [None, 90])
def test_decoded_frames_are_freed_as_they_go_without_the_garbage_collector(tmp_path, upright, flag):
    """Reading a frame's side data ties it and its picture in a reference cycle; were every frame's
    read, each would live until the cyclic collector runs, which a process holding TensorFlow
    does rarely: the converter grew by ~25 KB a frame."""
    import gc  # noqa: PLC0415

    path = write_av(tmp_path / "f.mp4", upright * 8, 25)
    if flag is not None:
        set_display_matrix(path, phone_matrix(flag, *upright[0].shape[:2]))
    alive = lambda: sum(isinstance(o, av.VideoFrame) for o in gc.get_objects())  # noqa: E731
    gc.collect()
    before, enabled = alive(), gc.isenabled()
    gc.disable()
    try:
        frames = 0
        for frames, _ in enumerate(media.video_frames(path, TB), 1):
            pass
        assert frames == 8 * PHONE_FRAMES
        assert alive() - before <= 1  # the first frame's, whose whole display matrix was read
    finally:
        if enabled:
            gc.enable()


@pytest.mark.parametrize("what,matrix", [
    ("45 degrees", [46341, 46341, 0, -46341, 46341, 0, 0, 0, 1 << 30]),
    ("scale", [2 * ONE, 0, 0, 0, ONE, 0, 0, 0, 1 << 30]),
    ("shear", [ONE, 0, 0, ONE // 2, ONE, 0, 0, 0, 1 << 30]),
    ("perspective", [ONE, 0, 1 << 20, 0, ONE, 0, 0, 0, 1 << 30]),
])
def test_an_unsupported_display_matrix_is_refused_naming_the_file(tmp_path, what, matrix):
    path = set_display_matrix(write_av(tmp_path / "odd.mp4", phone_portraits(2), 25), matrix)
    with pytest.raises(DataError, match=re.escape(path) + r": video frame 0 has an unsupported display matrix: "
                                        r"\[.*\] is not a rotation by a multiple of 90°"):
        list(media.video_frames(path, TB))


# ------------------------------------------------------------------ lengths and num_frames

def test_durations_and_num_frames(tmp_path):
    wav = write_audio(tmp_path / "a.wav", sine(440, 22050 + 100, 22050), 22050)
    assert media.audio_duration(wav) == pytest.approx((22050 + 100) / 22050)
    assert TB.frames_in(media.audio_duration(wav)) == 26
    frames = list(media.audio_frames(wav, TB))
    assert len(frames) == 26 and not frames[-1][200:].any() and frames[-1][:100].any()
    padded = list(media.audio_frames(wav, TB, num_frames=30))
    assert len(padded) == 30 and not np.concatenate(padded[26:]).any()
    np.testing.assert_array_equal(np.stack(padded[:26]), np.stack(frames))
    short = list(media.audio_frames(wav, TB, num_frames=3))
    np.testing.assert_array_equal(np.stack(short), np.stack(frames[:3]))
    assert list(media.audio_frames(wav, TB, num_frames=0)) == []


# ------------------------------------------------------------------ errors

def test_errors_name_the_file(tmp_path):
    missing = str(tmp_path / "nope.wav")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    video_only = write_video(tmp_path / "silent.mp4", list(range(5)), Fraction(1, 25), codec="libx264",
                             pix_fmt="yuv420p")
    audio_only = write_audio(tmp_path / "voice.wav", sine(440, 1600, 16000), 16000)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    cases = [(missing, lambda p: list(media.audio_frames(p, TB))),
             (missing, media.video_duration),
             (str(text), lambda p: list(media.audio_frames(p, TB))),
             (str(text), lambda p: list(media.video_frames(p, TB))),
             (str(empty), media.audio_duration),
             (video_only, lambda p: list(media.audio_frames(p, TB))),
             (video_only, media.audio_duration),
             (audio_only, lambda p: list(media.video_frames(p, TB))),
             (audio_only, lambda p: list(media.video_frames(p, TB, num_frames=3)))]
    for path, fn in cases:
        with pytest.raises(DataError) as e:
            fn(path)
        assert path in str(e.value)


def test_stream_types_read_the_header(tmp_path):
    video_only = write_video(tmp_path / "silent.mp4", list(range(3)), Fraction(1, 25), codec="libx264",
                             pix_fmt="yuv420p")
    assert media.stream_types(video_only) == ("video",)
    assert media.stream_types(write_audio(tmp_path / "voice.wav", sine(440, 1600, 16000), 16000)) == ("audio",)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    for path in (str(text), str(tmp_path / "nope.mp4")):
        with pytest.raises(DataError, match=path):
            media.stream_types(path)


@pytest.mark.parametrize("rate", [16000, 44100])
@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_nan_or_infinite_samples_name_the_file_sample_time_and_frame(tmp_path, rate, bad):
    x = sine(440, 2 * rate, rate)
    x[rate + 3:rate + 103] = bad  # 100 samples from 1.0 s + 3 samples, in frame 26: (0.04·25, 0.04·26]
    path = write_audio(tmp_path / "float.wav", np.stack([x, sine(220, 2 * rate, rate)], 1), rate,
                       codec="pcm_f32le", fmt="flt")  # stereo: the bad channel is found before the average
    with pytest.raises(DataError, match=rf"^{path}: audio sample {rate + 4} at {(rate + 3) / rate:.4f} s, in frame 26, "
                                        rf"is {bad}: expected finite samples$"):
        list(media.audio_frames(path, TB))


def test_a_missing_path_a_directory_and_a_fifo_say_what_they_are(tmp_path):
    folder, fifo = tmp_path / "clips.mp4", tmp_path / "live.wav"
    folder.mkdir()
    os.mkfifo(fifo)  # never opened: opening a FIFO blocks until something writes to it
    cases = [(tmp_path / "nope.wav", "media file not found"), (folder, "is a directory, not a media file"),
             (fifo, r"is a named pipe \(FIFO\), not a media file"),
             ("/dev/null", "is a character device, not a media file")]
    for path, message in cases:
        for read in (media.stream_types, lambda p: list(media.audio_frames(p, TB))):
            with pytest.raises(DataError, match=rf"^{path}:? {message}"):
                read(str(path))
