"""predict on live sources (emotion_e2e.live): a named pipe fed at the stream's own pace, HTTP,
standard input, an interrupt; a stream read once as it comes gives the file's predictions."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from emotion_e2e import config as C
from emotion_e2e.config import TimeBase
from emotion_e2e import live, predict
from emotion_e2e.benchmark import live as live_bench
from emotion_e2e import run_dir as run_lib
from emotion_e2e.data import tracking
from emotion_e2e.errors import ConfigError
from emotion_e2e.models import build_model
from face_fixtures import face_patch, paste
from media_fixtures import write_audio, write_av

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-5  # fp32 rounding and the CSV's 6 significant digits
SECONDS = 3
CHUNK = 0.5  # seconds per model call: rows come every half second


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``{name: run directory}``: tiny models with random weights (what is compared is the
    stream against the file, not what the model learned)."""
    out = {}
    for name, modalities in (("audio", ("audio",)), ("multimodal", ("audio", "face"))):
        d = str(tmp_path_factory.mktemp("runs") / name)
        cfg = C.TrainConfig(data_dir=os.path.join(d, "no_data"), inputs=C.InputConfig(modalities=modalities),
                            model=C.ModelConfig(recurrent=C.RecurrentConfig(layers=1, units=8),
                                                face=C.FaceNetConfig(backbone="resnet10")))
        run_lib.save_config(d, cfg)
        os.makedirs(os.path.dirname(run_lib.checkpoint_path(d)), exist_ok=True)
        build_model(cfg.model, cfg.inputs).save(run_lib.checkpoint_path(d))
        out[name] = d
    return out


@pytest.fixture(scope="module")
def predictors(runs):
    import contextlib  # noqa: PLC0415
    import io  # noqa: PLC0415

    with contextlib.redirect_stderr(io.StringIO()):  # no data directory: the defaults, said on stderr
        return {name: predict.Predictor.load(run) for name, run in runs.items()}


def talk_frame(k):
    frame = np.full((360, 480, 3), 50 + 3 * (k % 40), np.uint8)
    return paste(frame, face_patch(), 40 + (k % 20) * 2, 10)


def pair_frame(k):
    """Two faces side by side, the second mirrored and bluer, both drifting."""
    frame = np.full((360, 720, 3), 40, np.uint8)
    face = face_patch()
    other = np.clip(face[:, ::-1] * np.array([0.9, 0.9, 1.25]), 0, 255).astype(np.uint8)
    return paste(paste(frame, face, 20 + k % 15, 30), other, 400 - k % 15, 40)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """``{kind: path}``: a talk with a face and a voice-like tone as MP4, its MPEG-TS remux (a
    broadcast stream: no index, readable from any point on), and the tone alone as WAV."""
    d = tmp_path_factory.mktemp("live_media")
    rate = 44100
    t = np.arange(SECONDS * rate) / rate
    tone = 0.4 * np.sin(2 * np.pi * (300 * t + 150 * t ** 2))
    mp4 = write_av(d / "talk.mp4", [talk_frame(k) for k in range(SECONDS * 30)], Fraction(30), audio=tone,
                   audio_rate=rate)
    pair = write_av(d / "pair.mp4", [pair_frame(k) for k in range(SECONDS * 30)], Fraction(30), audio=tone,
                    audio_rate=rate)
    return {"mp4": mp4, "ts": live_bench.remux_ts(mp4, str(d / "talk.ts")),
            "pair_ts": live_bench.remux_ts(pair, str(d / "pair.ts")), "wav": write_audio(d / "voice.wav", tone, rate)}


def file_rows(predictor, path):
    """``predict_file`` of the same bytes as a file. A stream is read to the end of its shorter
    part; the file is cut to it too (MPEG-TS has no edit list: the AAC encoder's priming samples
    make its audio 2 frames longer than its picture)."""
    return predict.predict_file(predictor, path, progress=False, max_length_mismatch=2)


def assert_same_rows(live_table, file_table, labels=("arousal", "valence")):
    n = min(len(live_table), len(file_table))
    assert abs(len(live_table) - len(file_table)) <= 1, (len(live_table), len(file_table))
    np.testing.assert_allclose(live_table["time"].iloc[:n], file_table.index[:n], rtol=0, atol=1e-9)
    np.testing.assert_allclose(live_table[list(labels)].iloc[:n], file_table[list(labels)].iloc[:n], rtol=0,
                               atol=TOLERANCE)


@pytest.mark.parametrize("name, kind", [("multimodal", "ts"), ("audio", "wav")])
def test_a_named_pipe_fed_at_the_streams_pace_gives_the_files_predictions_chunk_by_chunk(
        predictors, clip, tmp_path, name, kind):
    fifo, out = tmp_path / f"feed.{kind}", tmp_path / "out"
    os.mkfifo(fifo)
    feeder, watch = live_bench.PacedFeed(clip[kind], fifo), live_bench.RowWatch(out / "feed.csv")
    feeder.start()
    watch.start()
    written = predict.predict_files(predictors[name], [str(fifo)], str(out), chunk_seconds=CHUNK, progress=False,
                                    report=lambda line: None)
    watch.done.set()
    feeder.join()
    assert written == [str(out / "feed.csv")]
    table = pd.read_csv(written[0])
    assert_same_rows(table, file_rows(predictors[name], clip[kind]))
    (summary,) = pd.read_csv(out / "summary.csv").to_dict("records")  # the CSV read back; nothing trimmed
    assert (summary["file"], summary["frames"], np.isnan(summary["trimmed_s"])) == (str(fifo), len(table), True)
    assert summary["arousal_mean"] == pytest.approx(table["arousal"].mean(), abs=1e-5)
    # Rows came while the source was still being written, half a second at a time.
    rows_per_chunk = round(CHUNK / 0.04)
    assert [n for _, n in watch.seen][:3] == [rows_per_chunk, 2 * rows_per_chunk, 3 * rows_per_chunk], watch.seen
    assert watch.seen[0][0] < feeder.end  # the first rows came before the stream was over
    lag = live_bench.chunk_delays(feeder.written, watch.seen, rows_per_chunk)
    assert len(lag) >= SECONDS / CHUNK - 1 and all(d > 0 for d in lag), lag
    print(f"\n{name} from a named pipe, {CHUNK} s chunks: delay from a chunk's last frame entering the pipe to "
          f"its rows, p50 {np.median(lag) * 1e3:.0f} ms, max {max(lag) * 1e3:.0f} ms")


@pytest.mark.parametrize("ending", ["chunked", "close"])
def test_an_http_stream_gives_the_same_rows_as_the_file(predictors, clip, tmp_path, capfd, ending):
    """A streaming server sends chunks (an end mark closes the stream) or just closes the
    connection at the end, which FFmpeg reports as an I/O error: both are the stream's end."""

    class Chunked:  # HTTP/1.1 chunked transfer coding over the handler's socket file
        def __init__(self, wfile):
            self.wfile = wfile

        def write(self, data):
            if data:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

        def flush(self):
            self.wfile.flush()

        def close(self):
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if ending == "chunked" else "HTTP/1.0"

        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            if ending == "chunked":
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            live_bench.PacedFeed(clip["ts"], Chunked(self.wfile) if ending == "chunked" else self.wfile).run()  # at its pace

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/talk.ts"
        written = predict.predict_files(predictors["multimodal"], [url], str(tmp_path / "out"), chunk_seconds=CHUNK,
                                        progress=False, report=lambda line: None)
    finally:
        server.shutdown()
    assert written == [str(tmp_path / "out" / "talk.csv")]
    assert_same_rows(pd.read_csv(written[0]), file_rows(predictors["multimodal"], clip["ts"]))
    said = capfd.readouterr().err
    assert ("the connection closed without an end-of-stream mark" in said) == (ending == "close"), said


def cli(*args, **kwargs):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CI="true")
    return subprocess.Popen([sys.executable, "-m", "emotion_e2e.predict", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_standard_input_prints_each_chunks_rows_as_they_come_and_writes_them(runs, predictors, clip, tmp_path):
    with open(clip["wav"], "rb") as f:
        p = cli(f"--model={runs['audio']}", "--input=-", f"--output_dir={tmp_path / 'out'}", "--print",
                f"--chunk_seconds={CHUNK}", stdin=f)
        stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr[-3000:]
    written = pd.read_csv(tmp_path / "out" / "stdin.csv")
    printed = pd.read_csv(__import__("io").StringIO(stdout))
    pd.testing.assert_frame_equal(printed, written)
    assert_same_rows(written, file_rows(predictors["audio"], clip["wav"]))
    assert "- : " not in stderr and "until the stream ended" in stderr  # the report goes to stderr with --print


def frames_before_a_stall(ts, fifo) -> tuple[int, int]:
    """``(grid frames given while the source stalls, all given)``: ``ts`` fed through the named
    pipe ``fifo`` at its pace for 1 s, then stalled until no frame has come for 2 s, then ended."""
    os.mkfifo(fifo)
    feeder = live_bench.PacedFeed(ts, fifo, stop_after=1.0)
    feeder.start()
    given = []
    reader = threading.Thread(target=lambda: given.extend(
        time.perf_counter() for _ in live.live_frames(str(fifo), TimeBase(), ("video",))), daemon=True)
    reader.start()
    deadline = time.perf_counter() + 60
    while (not given or time.perf_counter() - given[-1] < 2.0) and time.perf_counter() < deadline:
        time.sleep(0.05)
    stalled = len(given)
    feeder.release.set()  # the feed ends
    reader.join(timeout=60)
    return stalled, len(given)


def test_the_decoder_holds_back_no_picture_of_a_live_source(clip, tmp_path, monkeypatch):
    """A live picture comes as soon as the stream has closed it: while the source stalls, as many
    grid frames are given as a decoder without threads gives (22 of the 25 the first second
    makes: MPEG-TS and H.264's parser give a picture once the packets after it have begun). Frame
    threading would hold back two more pictures (20)."""
    stalled, total = frames_before_a_stall(clip["ts"], tmp_path / "feed.ts")
    monkeypatch.setattr(live, "LIVE_THREADING", "NONE")
    assert (stalled, total) == frames_before_a_stall(clip["ts"], tmp_path / "unthreaded.ts")
    assert total == 25 and stalled >= total - 3


def test_an_interrupt_ends_with_every_row_of_the_frames_read(runs, clip, tmp_path):
    fifo, out = tmp_path / "feed.ts", tmp_path / "out"
    os.mkfifo(fifo)
    feeder = live_bench.PacedFeed(clip["ts"], fifo, stop_after=2.0)  # 2 s, then the source stalls, its pipe still open
    feeder.start()
    p = cli(f"--model={runs['multimodal']}", f"--input={fifo}", f"--output_dir={out}", f"--chunk_seconds={CHUNK}")
    watch = live_bench.RowWatch(out / "feed.csv")
    watch.start()
    deadline = time.time() + 240
    while not any(n >= 25 for _, n in watch.seen) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=120)
    watch.done.set()
    feeder.release.set()
    assert p.returncode == 0, stderr[-3000:]
    table = pd.read_csv(out / "feed.csv")
    assert len(table) >= 25 and table["time"].tolist() == [round(0.04 * i, 9) for i in range(1, len(table) + 1)]
    assert table.notna().all().all()
    assert f"{len(table)} frames" in stdout and "until interrupted" in stdout, stdout


def test_every_face_of_a_stream_gets_its_own_trace_as_it_comes(predictors, clip, tmp_path):
    """--faces=all on a stream: a trace per track, each with its own state, the rows of the file's
    traces (same crops, same states) plus, for a track that outlives its last detection, the
    frames carried until the stream ends."""
    fifo, out = tmp_path / "pair.ts", tmp_path / "out"
    os.mkfifo(fifo)
    feeder = live_bench.PacedFeed(clip["pair_ts"], fifo)
    feeder.start()
    (written,) = predict.predict_files(predictors["multimodal"], [str(fifo)], str(out), chunk_seconds=CHUNK,
                                       faces="all", progress=False, report=lambda line: None)
    feeder.join()
    streamed = pd.read_csv(written, index_col=["track", "time"]).sort_index()
    whole = predict.predict_file(predictors["multimodal"], clip["pair_ts"], faces="all", progress=False,
                                 max_length_mismatch=2)
    assert sorted(streamed.index.unique("track")) == sorted(whole.index.unique("track")) == [1, 2]
    assert list(streamed.columns) == list(whole.columns)
    for track in (1, 2):
        s, w = streamed.loc[track], whole.loc[track]
        n = min(len(s), len(w))
        assert len(s) >= len(w) - 1 and s.index[0] == w.index[0]
        np.testing.assert_allclose(s[["arousal", "valence"]].iloc[:n], w[["arousal", "valence"]].iloc[:n], rtol=0,
                                   atol=TOLERANCE)
        assert (s[["face_found", "x", "y", "w", "h"]].iloc[:n].to_numpy() ==
                w[["face_found", "x", "y", "w", "h"]].iloc[:n].to_numpy()).all()


def test_a_camera_and_a_microphone_read_together_give_the_files_predictions(predictors, clip, tmp_path):
    """VIDEO+AUDIO: the picture from one live source, the sound from another (here two named pipes
    fed at their pace: the talk's video as MPEG-TS and its decoded sound as a float WAV)."""
    import av  # noqa: PLC0415

    with av.open(clip["mp4"]) as c:
        sound = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
    wav = write_audio(tmp_path / "sound.wav", sound, 44100, codec="pcm_f32le", fmt="flt")
    video = live_bench.remux_ts(clip["mp4"], str(tmp_path / "picture.ts"), kinds=("video",))
    camera, microphone = tmp_path / "camera.ts", tmp_path / "microphone.wav"
    os.mkfifo(camera)
    os.mkfifo(microphone)
    feeds = [live_bench.PacedFeed(video, camera), live_bench.PacedFeed(wav, microphone)]
    for feed in feeds:
        feed.start()
    (written,) = predict.predict_files(predictors["multimodal"], [f"{camera}+{microphone}"], str(tmp_path / "out"),
                                       chunk_seconds=CHUNK, progress=False, report=lambda line: None)
    for feed in feeds:
        feed.join()
    assert written == str(tmp_path / "out" / "camera.csv")
    assert_same_rows(pd.read_csv(written), file_rows(predictors["multimodal"], clip["mp4"]))


def test_a_rendered_video_needs_the_whole_file(runs, tmp_path):
    with pytest.raises(ConfigError, match="is a live source, read once as it comes: --render draws on the file"):
        predict.predict_files(runs["multimodal"], ["-"], str(tmp_path / "out"), render_video=True)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("path, want", [("-", True), ("rtsp://camera.local/stream", True), ("HTTP://x/y.ts", True),
                                        ("v4l2:/dev/video0", True), ("alsa:hw:0", True), ("pulse:default", True),
                                        ("v4l2:/dev/video0+alsa:hw:0", True), ("rtsp://h/a+b+pulse:default", True),
                                        ("a.mp4+alsa:hw:0", False),
                                        ("talk.mp4", False), ("s3://bucket/talk.mp4", False), ("x:y.mp4", False)])
def test_what_is_a_live_source(path, want):
    assert live.is_live(path) == want


def test_live_names_are_the_streams(runs):
    assert [predict.stem(p) for p in ("-", "http://127.0.0.1:8080/cam/feed.ts?token=1", "v4l2:/dev/video0",
                                      "v4l2:/dev/video1+alsa:hw:0")] == ["stdin", "feed", "video0", "video1"]
    assert live.split_pair("rtsp://h/a+b+pulse:default") == ("rtsp://h/a+b", "pulse:default")


def test_a_reader_behind_the_stream_says_so_once_per_report_interval():
    lines = []
    lag = live.Lag("cam", 0.04, lines.append)
    lag.start = time.perf_counter() - 5.0  # 5 s of wall time, 1 frame done
    assert lag.update(1) == pytest.approx(4.96, abs=0.05)
    assert lag.update(2) == pytest.approx(4.92, abs=0.05)
    assert len(lines) == 1 and lines[0].startswith("warning: cam: 5.0 s behind the stream (124 frames queued)")
    assert lag.worst == pytest.approx(4.96, abs=0.05)
    assert live.Lag("cam", 0.04, lines.append).update(1) == pytest.approx(0, abs=1e-3)  # on time: nothing said
    assert len(lines) == 1


def test_a_tracker_without_history_keeps_no_rows_however_long_it_runs():
    tracker = tracking.Tracker(C.TrackConfig(detect_every=1), history=False)
    box = tracking.Box(10, 10, 40, 40)
    for k in range(500):
        tracker.step([tracking.Detection(box._replace(x=10 + k % 7), 0.9, None)] if k % 3 else [])
    (track,) = tracker.live
    assert (track.boxes, track.found, track.scores, track.eyes) == ([], [], [], [])
    assert track.num_found == 333 and tracking.online_main(tracker) is track and track.found_now
    with pytest.raises(ValueError, match="keeps no tracks"):
        tracker.finish()


def test_a_reader_of_the_rows_that_goes_away_ends_the_run_with_every_row_written(runs, clip, tmp_path):
    """`predict --input=- --print | head`: the pipe closes under it; the CSV keeps what was done."""
    with open(clip["ts"], "rb") as f:
        p = cli(f"--model={runs['multimodal']}", "--input=-", f"--output_dir={tmp_path / 'out'}", "--print",
                f"--chunk_seconds={CHUNK}", stdin=f)
        first = p.stdout.readline()
        p.stdout.close()  # as `head -1` does
        p.wait(timeout=300)
        stderr = p.stderr.read()
    assert first.startswith("time,arousal,valence,face_found")
    assert p.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr and "Fatal" not in stderr and "until interrupted" in stderr, stderr[-3000:]
    table = pd.read_csv(tmp_path / "out" / "stdin.csv")
    assert len(table) >= round(CHUNK / 0.04) and table.notna().all().all()
