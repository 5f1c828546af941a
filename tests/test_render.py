"""emotion_e2e.render on real files: the rendered MP4 has the input's frames, times, size and sound
(copied, or re-encoded for a WAV), the point and the box are drawn where the predictions and the
box say, a file without video gets a plain background, a full disk keeps the previous video, and
predict --render writes it."""

import os
import re
from fractions import Fraction

import av
import cv2
import numpy as np
import pandas as pd
import pytest

from disk_fixtures import snapshot
from emotion_e2e import predict, render
from emotion_e2e.config import TimeBase
from emotion_e2e.data import media
from emotion_e2e.errors import ConfigError, DataError
from face_fixtures import face_patch, paste, phone_portraits
from media_fixtures import write_audio, write_av, write_phone_video
from test_predict import LABELS, cli, exported, run, tone  # noqa: F401 - the demo run fixtures

SIZE, WIDE = (120, 160), (240, 320)  # height, width
SECONDS = 2
AAC_FRAME = 1024  # samples
STEP = TimeBase().frame_step


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """``{name: path}``: 30 fps grey clips of two sizes with an AAC tone, and a WAV of the tone."""
    d = tmp_path_factory.mktemp("render_media")
    fps, out = 30, {"voice": write_audio(d / "voice.wav", tone(48000, SECONDS), 48000)}
    for name, size in (("grey", SIZE), ("wide", WIDE)):
        grey = [np.full(size + (3,), 90 + k % 2, np.uint8) for k in range(SECONDS * fps)]
        out[name] = write_av(d / f"{name}.mp4", grey, Fraction(fps), audio=tone(44100, SECONDS), audio_rate=44100)
    return out


def predictions(n, values, box=None, first=1):
    """A ``predict_file``-like table of ``n`` frames from ``first``: ``values(i)`` is frame i's
    (valence, arousal); with ``box`` the face columns too."""
    frames = np.arange(first, first + n)
    xy = np.array([values(i) for i in frames], np.float32)
    table = pd.DataFrame({"arousal": xy[:, 1], "valence": xy[:, 0]},
                         index=pd.Index(np.round(STEP * frames, 9), name=predict.TIME))
    if box is not None:
        table[predict.FACE_FOUND] = np.ones(n, np.int8)
        table[list(predict.BOX)] = np.tile(np.array(box, np.int32), (n, 1))
    return table


def decoded_video(path):
    """``(frame times in seconds, frames as RGB, (height, width))`` of ``path``'s video."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [(float(f.pts * s.time_base), f.to_ndarray(format="rgb24")) for f in c.decode(s)]
    return [t for t, _ in frames], [f for _, f in frames], frames[0][1].shape[:2]


def audio_samples(path):
    """``(codec, sample rate, decoded samples per channel)`` of ``path``'s audio."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        return s.codec_context.name, s.rate, sum(f.samples for f in c.decode(s))


def audio_payloads(path):
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


def test_the_video_keeps_the_input_frames_times_size_and_sound(clips, tmp_path):
    out = tmp_path / "grey.mp4"
    n = 50
    render.render(predictions(n, lambda i: (0.0, 0.0), box=(40, 10, 50, 50)), clips["grey"], str(out))
    times_in, _, size_in = decoded_video(clips["grey"])
    times_out, frames, size_out = decoded_video(out)
    assert size_out == size_in == SIZE
    assert abs(len(times_out) - len(times_in)) <= 1
    np.testing.assert_allclose(times_out, times_in, atol=1e-3)  # the same frames at the same times
    assert abs(media.video_duration(str(out)) - media.video_duration(clips["grey"])) <= 1 / 30
    codec, rate, samples = audio_samples(out)
    assert (codec, rate) == ("aac", 44100)
    assert abs(samples - audio_samples(clips["grey"])[2]) <= AAC_FRAME
    assert audio_payloads(out) == audio_payloads(clips["grey"])  # copied, not re-encoded
    assert os.listdir(tmp_path) == ["grey.mp4"]  # no temporary file left


def test_frames_are_decoded_and_drawn_one_at_a_time(clips, tmp_path, monkeypatch):
    """What keeps memory constant: when frame k is drawn, the decoder has given k frames and no
    more (the frames before it are encoded and gone)."""
    decoded, drawn = [0], []
    original_frames, original_draw = media.displayed_frames, render.Painter.draw

    def counting_frames(path):
        for item in original_frames(path):
            decoded[0] += 1
            yield item

    def draw(self, rgb, frame):
        drawn.append(decoded[0])
        return original_draw(self, rgb, frame)

    monkeypatch.setattr(media, "displayed_frames", counting_frames)
    monkeypatch.setattr(render.Painter, "draw", draw)
    render.render(predictions(50, lambda i: (0.0, 0.0)), clips["grey"], str(tmp_path / "grey.mp4"))
    assert drawn == list(range(1, SECONDS * 30 + 1))


def point_centre(frame, colour=render.PERSON_COLOURS[0], tolerance=40):
    """The centre ``(x, y)`` of the pixels of ``frame`` within ``tolerance`` of ``colour``."""
    near = np.abs(frame.astype(int) - colour).max(axis=2) <= tolerance
    ys, xs = np.nonzero(near)
    assert len(xs) > 5, "the point is not drawn"
    return xs.mean(), ys.mean()


def test_the_point_moves_to_the_other_quadrant_when_the_predictions_jump(clips, tmp_path):
    n = 50  # (-0.5, -0.5) for the first second, (0.5, 0.5) for the next
    table = predictions(n, lambda i: (-0.5, -0.5) if i <= 25 else (0.5, 0.5))
    out = tmp_path / "jump.mp4"
    render.render(table, clips["grey"], str(out))
    times, frames, size = decoded_video(out)
    x, y, side = render.painter(table, *size).plane_at(0)
    centre = (x + (side - 1) / 2, y + (side - 1) / 2)
    before = point_centre(frames[times.index(min(times, key=lambda t: abs(t - 0.5)))])
    after = point_centre(frames[times.index(min(times, key=lambda t: abs(t - 1.5)))])
    assert before[0] < centre[0] and before[1] > centre[1]  # left and down: valence and arousal -0.5
    assert after[0] > centre[0] and after[1] < centre[1]  # right and up: +0.5
    np.testing.assert_allclose(np.subtract(after, before), [side / 2, -side / 2], atol=2)
    # the frame that shows the jump: prediction frame 26 covers (1.00, 1.04] s
    for t, frame in zip(times, frames):
        if 0.9 < t < 1.1:
            assert (point_centre(frame)[0] > centre[0]) == (t > 1.0), t


def test_the_face_box_is_drawn_where_the_box_is(clips, tmp_path):
    box = (40, 10, 50, 40)  # x, y, w, h
    out = tmp_path / "box.mp4"
    render.render(predictions(50, lambda i: (0.0, 0.0), box=box), clips["grey"], str(out))
    _, frames, _ = decoded_video(out)
    frame = frames[len(frames) // 2].astype(int)
    x, y, w, h = box
    amber = np.abs(frame - render.PERSON_COLOURS[0]).max(axis=2) <= 60
    for edge in (amber[y, x + 5:x + w - 5], amber[y + h, x + 5:x + w - 5], amber[y + 5:y + h - 5, x],
                 amber[y + 5:y + h - 5, x + w]):
        assert edge.mean() > 0.9
    assert not amber[y + 5:y + h - 5, x + 5:x + w - 5].any()  # inside the box: the picture
    assert not amber[:y - 3].any()  # above it


def test_every_track_gets_its_box_and_panel(clips, tmp_path):
    """With faces="all" tables: a panel per track alive, in its own slot."""
    one = predictions(50, lambda i: (-0.5, 0.5), box=(10, 10, 30, 30)).assign(track=1)
    two = predictions(25, lambda i: (0.5, -0.5), box=(110, 10, 30, 30), first=26).assign(track=2)
    table = pd.concat([one, two]).set_index("track", append=True).reorder_levels(["track", "time"])
    out = tmp_path / "tracks.mp4"
    render.render(table, clips["wide"], str(out))
    times, frames, size = decoded_video(out)
    paint = render.painter(table, *size)
    second = paint.panel(1)
    assert second[0] > paint.panel(0)[0] + paint.panel(0)[2]  # beside the first
    x, y, w, h = second
    for t, frame in zip(times, frames):
        if abs(t - 0.5) < 0.02 or abs(t - 1.5) < 0.02:
            shaded = frame[y + 2:y + h - 2, x + 2:x + w - 2, 0].mean() < 60  # the grey is 90
            assert shaded == (t > 1), t  # the second track's panel only while it lives
            second_box = np.abs(frame[10, 115:135].astype(int) - render.PERSON_COLOURS[1]).max(axis=1) <= 60
            assert second_box.mean() > 0.9 if t > 1 else not second_box.any()


def test_a_phone_video_held_sideways_is_rendered_upright(tmp_path):
    frames = phone_portraits(25)  # 160 × 120, taller than wide
    upright = write_av(tmp_path / "upright.mp4", frames, 25)
    sideways = write_phone_video(tmp_path / "sideways.mp4", frames, 90)  # stored 120 × 160, flagged "rotate 90°"
    out = tmp_path / "rendered.mp4"
    table = predictions(25, lambda i: (0.0, 0.0))
    render.render(table, sideways, str(out))
    _, rendered, size = decoded_video(out)
    _, want, _ = decoded_video(upright)
    assert size == frames[0].shape[:2]
    _, panel_top, _, _ = render.painter(table, *size).panel(0)
    def distance(a, b):
        return np.abs(np.stack(a)[:, :panel_top].astype(int) - np.stack(b)[:, :panel_top]).mean()

    # above the panel: the upright video (both 4:2:0 H.264), not an upside-down one
    assert distance(rendered, want) < 5 and distance(rendered, [f[::-1, ::-1] for f in want]) > 25


def test_an_audio_file_renders_a_plain_background_with_the_panel_and_its_sound(clips, tmp_path):
    out = tmp_path / "voice.mp4"
    cfg = render.RenderConfig()
    table = predictions(50, lambda i: (0.5, 0.5))
    render.render(table, clips["voice"], str(out))
    times, frames, size = decoded_video(out)
    assert size == cfg.size
    assert abs(len(frames) - SECONDS / STEP) <= 1 and times[1] - times[0] == pytest.approx(STEP)
    frame = frames[len(frames) // 2].astype(int)
    assert np.abs(frame[:size[0] // 2] - cfg.background).max() <= 4  # the top half: the plain background
    x, y, side = render.painter(table, *size).plane_at(0)
    px, py = point_centre(frame)
    assert x + side / 2 < px < x + side and y < py < y + side / 2  # upper right: (0.5, 0.5)
    codec, rate, samples = audio_samples(out)
    assert (codec, rate) == ("aac", 48000)  # a WAV's PCM is re-encoded: MP4 does not hold it
    assert abs(samples - SECONDS * 48000) <= AAC_FRAME


@pytest.mark.parametrize("rate, encoded", [(37800, 44100), (6000, 7350), (192000, 96000)])
def test_sound_at_a_rate_aac_does_not_take_is_resampled_to_the_nearest_higher_one(tmp_path, rate, encoded):
    assert render.encoder_rate(rate) == encoded
    voice = write_audio(tmp_path / "voice.wav", tone(rate, SECONDS), rate)
    out = tmp_path / "voice.mp4"
    render.render(predictions(50, lambda i: (0.5, 0.5)), voice, str(out))
    codec, got, samples = audio_samples(out)
    assert (codec, got) == ("aac", encoded)
    assert abs(samples - SECONDS * encoded) <= 2 * AAC_FRAME  # the whole sound, at the new rate


def test_a_model_with_one_label_dimension_has_no_plane(clips, tmp_path):
    table = predictions(50, lambda i: (0.0, 0.0))[["arousal"]]
    with pytest.raises(ConfigError, match=r"a plane of two label dimensions .* but the model predicts \['arousal'\]"):
        render.render(table, clips["grey"], str(tmp_path / "one.mp4"))
    assert not os.listdir(tmp_path)


def test_the_cli_renders_each_input_once_beside_its_csv(exported, tmp_path):
    face = cv2.resize(face_patch(), (150, 150), interpolation=cv2.INTER_AREA)
    frames = [paste(np.full(WIDE + (3,), 70, np.uint8), face, 40 + 2 * k, 40) for k in range(SECONDS * 25)]
    path = write_av(tmp_path / "talk.mp4", frames, Fraction(25), audio=tone(44100, SECONDS), audio_rate=44100)
    out = tmp_path / "out"
    r = cli(f"--model={exported('multimodal')}", f"--input={path}", f"--output_dir={out}", "--render")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(os.listdir(out)) == ["summary.csv", "talk.csv", "talk.mp4"]
    assert r.stdout.strip().splitlines()[-1].endswith(f"× real time -> {out / 'talk.csv'}, {out / 'talk.mp4'}")
    table = pd.read_csv(out / "talk.csv")
    assert list(table.columns) == ["time", *LABELS, "face_found", *predict.BOX]
    times_in, _, _ = decoded_video(path)
    times_out, frames, _ = decoded_video(out / "talk.mp4")
    assert len(times_out) == len(times_in)
    k = len(frames) // 2  # shown at k / 25 s: prediction frame k, the CSV's row k - 1
    x, y, w, h = table.loc[k - 1, list(predict.BOX)].astype(int)  # the main track's box, drawn
    frame = frames[k].astype(int)
    assert (np.abs(frame[y, x + 3:x + w - 3] - render.PERSON_COLOURS[0]).max(axis=1) <= 60).mean() > 0.8
    assert abs(audio_samples(out / "talk.mp4")[2] - audio_samples(path)[2]) <= AAC_FRAME


def test_a_full_disk_is_one_error_and_keeps_the_previous_video(clips, small_disk):
    out = os.path.join(small_disk.path, "out", "grey.mp4")
    os.makedirs(os.path.dirname(out))
    table = predictions(50, lambda i: (0.0, 0.0))
    render.render(table, clips["grey"], out)
    before = snapshot(os.path.dirname(out))
    small_disk.fill(leave=4096)  # less than the video: FFmpeg's writes fail part way
    with pytest.raises(DataError, match=rf"^cannot write {re.escape(out)}: No space left on device; the previous "
                                        rf"file is kept$"):
        render.render(predictions(50, lambda i: (0.5, 0.5)), clips["grey"], out)
    assert snapshot(os.path.dirname(out)) == before  # the previous video byte for byte, no partial file
