"""Real media through the whole converter: RECOLA layout, manifests, bad input, the CLIs."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from fractions import Fraction

import numpy as np
import pytest

from disk_fixtures import one_line_error, snapshot
from emotion_e2e import locking
from emotion_e2e.config import InputConfig, ReaderConfig, TrackConfig
from emotion_e2e.data import convert, faces, reader, sources
from emotion_e2e.errors import ConfigError, DataError
from face_fixtures import face_patch, paste, phone_portraits
from media_fixtures import dominant, sine, write_audio, write_av, write_phone_video
from test_labels import write_arff

N = 30  # grid frames per recording: 1.2 s
FPS = {"train_1": Fraction(30), "dev_1": Fraction(25), "test_1": Fraction(24000, 1001)}
BLUE_STEP = 6  # the blue channel of video frame k is BLUE_STEP·k: time is in the picture
CFG = convert.ConvertConfig()
READ = (InputConfig(label_names=()), ReaderConfig(seq_len=8, batch_size=1))


def tone_hz(i):
    """The tone of grid frame i (1-based)."""
    return 400 + 60 * (i - 1)


def tone(rate, n=N):
    seg = rate // 25
    return np.concatenate([sine(tone_hz(i), seg, rate) for i in range(1, n + 1)])


def video_frame(k, face=True):
    frame = np.full((360, 480, 3), 90, np.uint8)
    if face:
        frame = paste(frame, face_patch(), 90, 30)
    frame[..., 2] = BLUE_STEP * k
    return frame


def write_video(path, fps, seconds=Fraction(N, 25), no_face=(), audio_rate=None):
    count = int(seconds * fps) + 1
    frames = [video_frame(k, face=k not in no_face) for k in range(count)]
    return write_av(path, frames, fps, audio=None if audio_rate is None else tone(audio_rate), audio_rate=audio_rate or 44100)


def expected_video_frame(i, fps, count):
    """Index of the last video frame at or before 0.04·i (exact arithmetic)."""
    return min(int(Fraction(i, 25) * fps), count - 1)


def read_back(directory, pattern="*", label_names=(), modalities=("audio", "face")):
    """{recording_id: dict of per-frame arrays} read through the tf.data reader in eval mode."""
    inputs = InputConfig(label_names=label_names, modalities=modalities)
    out = {}
    for b in reader.make_dataset(os.path.join(directory, pattern + ".tfrecord"), inputs,
                                 ReaderConfig(seq_len=8, batch_size=1), training=False):
        keep = b["mask"][0].numpy() > 0
        rec = out.setdefault(b["recording_id"][0].numpy().decode(), {})
        for k in ("frame", "audio", "face", "face_found", "labels"):
            if k in b:
                rec.setdefault(k, []).append(b[k][0].numpy()[keep])
    return {r: {k: np.concatenate(v) for k, v in d.items()} for r, d in out.items()}


def check_audio(audio):
    got = [dominant(a, 16000) for a in audio]
    np.testing.assert_allclose(got, [tone_hz(i) for i in range(1, len(audio) + 1)], atol=26)


def check_video(faces, fps, count):
    got = [int(round(np.median(f[..., 2]) * 255 / BLUE_STEP)) for f in faces]
    assert got == [expected_video_frame(i, fps, count) for i in range(1, len(faces) + 1)]


@pytest.fixture(scope="module")
def recola(tmp_path_factory):
    root = tmp_path_factory.mktemp("avec2016")
    for d in ("recordings_audio", "recordings_video", "ratings_gold_standard/arousal",
              "ratings_gold_standard/valence"):
        os.makedirs(root / d)
    write_audio(root / "recordings_audio/train_1.wav", tone(44100), 44100)
    write_audio(root / "recordings_audio/dev_1.wav", tone(48000), 48000)
    for rid, fps in FPS.items():  # test_1 has no WAV: its audio comes from the MP4's track
        write_video(root / f"recordings_video/{rid}.mp4", fps, audio_rate=44100 if rid == "test_1" else None)
    for rid in ("train_1", "dev_1"):
        for dim, sign in (("arousal", 1), ("valence", -1)):
            write_arff(root / f"ratings_gold_standard/{dim}/{rid}.arff", [sign * r / 100 for r in range(N + 1)],
                       name=rid)
    return root


@pytest.fixture(scope="module")
def recola_converted(recola, tmp_path_factory):
    out = tmp_path_factory.mktemp("recola_tf")
    meta = convert.convert(sources.recola_recordings(str(recola)), CFG, str(out), source="recola")
    return out, meta


def test_recola_layout_converts_with_exact_alignment(recola_converted):
    out, meta = recola_converted
    assert sorted(meta["partitions"]) == ["dev", "test", "train"]
    assert meta["partitions"]["test"]["labelled"] is False and meta["partitions"]["train"]["labelled"]
    assert meta["label_names"] == ["arousal", "valence"]
    recs = read_back(str(out))
    assert sorted(recs) == ["dev_1", "test_1", "train_1"]
    for rid, fps in FPS.items():
        r = recs[rid]
        # unlabelled test_1 takes its length from the media: AAC pads to whole 1024-sample blocks
        n = N + 1 if rid == "test_1" else N
        assert r["frame"].tolist() == list(range(1, n + 1))
        check_audio(r["audio"][:N])  # from 44.1 kHz and 48 kHz WAVs, and from the MP4's AAC track
        check_video(r["face"], fps, int(Fraction(N, 25) * fps) + 1)  # 30, 25 and 23.976 fps
        assert r["face_found"].min() == 1
    labelled = read_back(str(out), "train-*", label_names=("arousal", "valence"))
    np.testing.assert_allclose(labelled["train_1"]["labels"][:, 0], np.arange(1, N + 1) / 100, atol=1e-7)
    np.testing.assert_allclose(labelled["train_1"]["labels"][:, 1], -np.arange(1, N + 1) / 100, atol=1e-7)


def test_recola_audio_only_needs_no_video(recola, tmp_path):
    cfg = convert.ConvertConfig(modalities=("audio",))
    meta = convert.convert(sources.recola_recordings(str(recola), ("train",)), cfg, str(tmp_path))
    assert meta["modalities"] == ["audio"] and "face_found_ratio" not in meta["recordings"][0]
    recs = read_back(str(tmp_path), modalities=("audio",))
    check_audio(recs["train_1"]["audio"])


def test_recola_bad_arff_and_missing_gold_standard(recola, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(recola, root)
    (root / "ratings_gold_standard/valence/dev_1.arff").write_text(
        "@relation x\n@attribute Instance_name string\n@attribute frameTime numeric\n@data\ndev_1,0.0\n")
    with pytest.raises(DataError, match=r"dev_1\.arff: unexpected ARFF attributes"):
        convert.convert(sources.recola_recordings(str(root), ("dev",)), CFG, str(tmp_path / "out"))
    os.remove(root / "ratings_gold_standard/valence/dev_1.arff")
    with pytest.raises(DataError, match=r"recording dev_1: gold-standard file\(s\) missing"):
        sources.recola_recordings(str(root))
    with pytest.raises(DataError, match="not an AVEC 2016 package"):
        sources.recola_recordings(str(tmp_path / "nothing"))


def write_manifest(path, rows):
    path.write_text("recording_id,partition,audio,video,labels\n" + "\n".join(",".join(r) for r in rows) + "\n")
    return str(path)


def write_label_csv(path, seconds, rate=10, nan_at=None):
    t = np.arange(0, seconds + 1e-9, 1 / rate)
    y = np.stack([t, np.sin(t), np.cos(t)], 1)
    if nan_at is not None:
        y[nan_at, 1] = np.nan
    np.savetxt(path, y, delimiter=",", header="time,energy,pleasure", comments="")
    return str(path)


def test_manifest_with_missed_faces_audio_from_video_and_labels_at_10_hz(tmp_path):
    write_audio(tmp_path / "a.wav", tone(22050), 22050)
    write_video(tmp_path / "a.mp4", FPS["train_1"], no_face=range(10, 15))  # 30 fps: grid frames 9..12
    write_video(tmp_path / "b.mov", FPS["dev_1"], audio_rate=48000)
    write_label_csv(tmp_path / "a.csv", 1.2)
    write_label_csv(tmp_path / "b.csv", 1.2)
    manifest = write_manifest(tmp_path / "m.csv", [["rec_a", "train", "a.wav", "a.mp4", "a.csv"],
                                                   ["rec_b", "dev", "", "b.mov", "b.csv"]])
    meta = convert.convert(sources.manifest_recordings(manifest), CFG, str(tmp_path / "out"), source="manifest")
    assert meta["label_names"] == ["energy", "pleasure"]
    recs = read_back(str(tmp_path / "out"), label_names=("energy", "pleasure"))
    a, b = recs["rec_a"], recs["rec_b"]
    missed = [i for i in range(1, N + 1) if 10 <= expected_video_frame(i, Fraction(30), 37) <= 14]
    assert missed == [9, 10, 11, 12]
    assert [i for i in range(1, N + 1) if not a["face_found"][i - 1]] == missed
    check_video(a["face"], Fraction(30), 37)  # held box, current frame: time is still right
    check_audio(a["audio"])
    check_audio(b["audio"])
    grid = np.arange(1, N + 1) * 0.04
    np.testing.assert_allclose(a["labels"][:, 0], np.interp(grid, np.arange(13) / 10, np.sin(np.arange(13) / 10)),
                               atol=1e-6)
    rec = {r["recording_id"]: r for r in meta["recordings"]}
    assert rec["rec_a"]["face_found_ratio"] == pytest.approx(1 - 4 / N)  # the main track's coverage
    assert rec["rec_a"]["face_tracks"] == rec["rec_b"]["face_tracks"] == 1  # the gap is bridged: one person
    assert meta["face"]["track"] == dataclasses.asdict(TrackConfig())  # predict must track as the converter did


def test_manifest_audio_only_corpus(tmp_path):
    write_audio(tmp_path / "a.wav", tone(16000), 16000)
    manifest = write_manifest(tmp_path / "m.csv", [["x", "test", "a.wav", "", ""]])
    meta = convert.convert(sources.manifest_recordings(manifest), convert.ConvertConfig(modalities=("audio",)),
                           str(tmp_path / "out"))
    assert meta["label_names"] == [] and meta["partitions"]["test"]["num_frames"] == N
    check_audio(read_back(str(tmp_path / "out"), modalities=("audio",))["x"]["audio"])


def bad_manifest(tmp_path, row, **files):
    for name, make in files.items():
        make(tmp_path / name)
    return sources.manifest_recordings(write_manifest(tmp_path / "m.csv", [row]))


@pytest.mark.parametrize("case,match", [
    ("missing_media", r"recording r1 \(train\): .*nope\.wav"),
    ("unreadable_media", r"recording r1 \(train\): .*text\.mp4"),
    ("no_audio_track", r"recording r1 \(train\): .*silent\.mp4.*audio"),
    ("no_face_anywhere", r"no face found in any of \d+ frames of video .*blank\.mp4 \(recording r1\)"),
    ("length_mismatch", r"recording r1: lengths in frames differ by more than 1: .*'labels': 50"),
    ("nan_label", r"recording r1.*frame 5"),
])
def test_bad_input_is_named(tmp_path, case, match):
    fps = Fraction(25)
    rows = {
        "missing_media": (["r1", "train", "nope.wav", "", ""], {}),
        "unreadable_media": (["r1", "train", "", "text.mp4", ""], {"text.mp4": lambda p: p.write_text("not a video")}),
        "no_audio_track": (["r1", "train", "", "silent.mp4", ""], {"silent.mp4": lambda p: write_video(p, fps)}),
        "no_face_anywhere": (["r1", "train", "a.wav", "blank.mp4", ""],
                             {"a.wav": lambda p: write_audio(p, tone(16000), 16000),
                              "blank.mp4": lambda p: write_video(p, fps, no_face=range(100))}),
        "length_mismatch": (["r1", "train", "a.wav", "", "l.csv"],
                            {"a.wav": lambda p: write_audio(p, tone(16000), 16000),
                             "l.csv": lambda p: write_label_csv(p, 2.0)}),
        "nan_label": (["r1", "train", "a.wav", "", "l.csv"],
                      {"a.wav": lambda p: write_audio(p, tone(16000), 16000),
                       "l.csv": lambda p: write_label_csv(p, 1.2, rate=25, nan_at=5)}),
    }
    row, files = rows[case]
    recs = bad_manifest(tmp_path, row, **files)
    modalities = ("audio",) if row[3] == "" or case == "no_audio_track" else ("audio", "face")
    with pytest.raises(DataError, match=match):
        convert.convert(recs, convert.ConvertConfig(modalities=modalities), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out") or not os.listdir(tmp_path / "out")


PHONE_FRAMES = 12
CROP_NOISE = 3  # mean |difference| of two crops of the same face through H.264 and JPEG


def phone_crops(video):
    """The converter's face crops (decoded) and face_found flags of a video-only recording."""
    recording = sources.MediaRecording("phone", "train", video=str(video))
    n, _, frames = recording.open(convert.ConvertConfig(modalities=("face",)))
    frames = list(frames)
    assert n == len(frames) == PHONE_FRAMES
    return [faces.decode_jpeg(f.face_jpeg) for f in frames], [f.face_found for f in frames]


@pytest.fixture(scope="module")
def upright_crops(tmp_path_factory):
    """The crops of the phone portraits written upright, without a rotation flag."""
    path = tmp_path_factory.mktemp("upright") / "upright.mp4"
    return phone_crops(write_av(path, phone_portraits(PHONE_FRAMES), 25))


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_a_phone_video_with_a_rotation_flag_gives_the_crops_of_the_upright_video(tmp_path, upright_crops, degrees):
    path = write_phone_video(tmp_path / f"phone{degrees}.mp4", phone_portraits(PHONE_FRAMES), degrees)
    crops, found = phone_crops(path)
    want_crops, want_found = upright_crops
    assert found == want_found == [True] * PHONE_FRAMES
    for i, (crop, want) in enumerate(zip(crops, want_crops), 1):
        assert np.abs(crop.astype(np.int16) - want).mean() < CROP_NOISE, f"frame {i}"


def test_labels_one_frame_longer_than_media_are_trimmed(tmp_path):
    write_audio(tmp_path / "a.wav", tone(16000), 16000)
    write_label_csv(tmp_path / "l.csv", 1.24, rate=25)  # 31 label frames, 30 audio frames
    recs = sources.manifest_recordings(write_manifest(tmp_path / "m.csv", [["r", "train", "a.wav", "", "l.csv"]]))
    meta = convert.convert(recs, convert.ConvertConfig(modalities=("audio",)), str(tmp_path / "out"))
    assert meta["recordings"][0]["num_frames"] == N


def test_manifest_errors(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("id,partition,audio,video,labels\nx,train,a.wav,,\n")
    with pytest.raises(DataError, match=r"expected columns .* received \['id'"):
        sources.manifest_recordings(str(p))
    write_manifest(p, [["x", "train", "", "", ""]])
    with pytest.raises(DataError, match="line 2 .*recording x.*neither audio nor video"):
        sources.manifest_recordings(str(p))


def run(*args, **kw):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CI="true")
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, **kw)


def test_prepare_and_inspect_cli_on_the_demo_source(tmp_path):
    out = tmp_path / "demo"
    r = run("emotion_e2e.prepare", "--source=demo", f"--output_dir={out}", "--demo_train=2", "--demo_dev=1",
            "--demo_seconds=2", "--workers=2", "--detect_every=3", "--track_max_gap=10")
    assert r.returncode == 0, r.stderr
    assert "train: 2 recordings, 100 frames" in r.stdout and "dev: 1 recordings, 50 frames" in r.stdout
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["source"] == "demo" and meta["partitions"]["dev"]["face_found_ratio"] == 1.0
    # The track settings are recorded; the demo's recordings are crops already: nothing is tracked.
    assert (meta["face"]["track"]["detect_every"], meta["face"]["track"]["max_gap"]) == (3, 10)
    assert all("face_tracks" not in e for e in meta["recordings"])
    r = run("emotion_e2e.inspect_records", str(out / "dev-*.tfrecord"), f"--csv={tmp_path / 'f.csv'}")
    assert r.returncode == 0, r.stderr
    assert "dev_000" in r.stdout and "1 recordings, 50 frames" in r.stdout
    rows = (tmp_path / "f.csv").read_text().splitlines()
    assert rows[0] == "recording_id,frame,time,arousal,valence,face_found,audio_rms"
    assert len(rows) == 51 and rows[1].startswith("dev_000,1,0.04,")
    r = run("emotion_e2e.prepare", "--source=recola")
    assert r.returncode != 0 and "--source=recola needs --input" in r.stderr
    shard = out / "dev-00000-of-00001.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-100])
    r = run("emotion_e2e.inspect_records", str(out / "dev-*.tfrecord"))
    assert r.returncode == 1 and f"error: TFRecord file {shard} is truncated or corrupt" in r.stderr
    r = run("emotion_e2e.prepare", "--source=manifest", f"--input={tmp_path / 'missing.csv'}",
            f"--output_dir={tmp_path / 'm'}")
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("error: cannot read manifest")


def test_prepare_refuses_a_face_track_flag_out_of_range_in_one_line(tmp_path):
    r = run("emotion_e2e.prepare", "--source=demo", f"--output_dir={tmp_path / 'out'}", "--detect_every=0")
    assert r.returncode == 1 and not (tmp_path / "out").exists()
    assert r.stderr.strip().splitlines() == ["error: TrackConfig: need detect_every >= 1, max_gap >= 0, "
                                             "search_scale >= 1. Received: detect_every=0, max_gap=25, "
                                             "search_scale=2.0"]


def test_interrupted_conversion_leaves_no_shard_and_reruns_cleanly(tmp_path):
    out = tmp_path / "demo"
    args = ("emotion_e2e.prepare", "--source=demo", f"--output_dir={out}", "--demo_train=3", "--demo_dev=0",
            "--demo_seconds=60")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    deadline = time.time() + 120
    incomplete = out / convert.INCOMPLETE
    while time.time() < deadline and not (incomplete.exists() and os.listdir(incomplete)):
        time.sleep(0.05)
    time.sleep(0.5)  # mid-way through writing the first shard
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # killed mid-shard: the partial file is in the hidden folder, out of reach of any shard pattern
    assert os.listdir(incomplete) == ["train-00000-of-00003.tfrecord.part"]
    # and the killed writer's lock file, whose lock died with it (the rerun takes it over)
    assert sorted(os.listdir(out)) == sorted([convert.INCOMPLETE, locking.LOCK])
    with pytest.raises(DataError, match="no TFRecord files match"):
        reader.make_dataset(str(out / "train-*.tfrecord"), *READ, training=False)
    r = run(*args)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["metadata.json", "train-00000-of-00003.tfrecord",
                                       "train-00001-of-00003.tfrecord", "train-00002-of-00003.tfrecord"]


def files_under(d):
    return sorted(os.path.relpath(os.path.join(root, n), d) for root, dirs, names in os.walk(d) for n in names + dirs)


@pytest.mark.parametrize("row,column,received", [
    (["r1", "../../x", "a.wav", "", ""], "partition", r"partition '\.\./\.\./x'"),
    (["../../../EVIL", "train", "a.wav", "", ""], "recording_id", r"recording id '\.\./\.\./\.\./EVIL'"),
    (["", "train", "a.wav", "", ""], "recording_id", "recording id ''"),
    (["speaker/1", "train", "a.wav", "", ""], "recording_id", "recording id 'speaker/1'"),
])
def test_prepare_refuses_a_manifest_name_that_would_leave_the_output_folder(tmp_path, row, column, received):
    corpus = tmp_path / "a" / "b" / "c"
    corpus.mkdir(parents=True)
    write_audio(corpus / "a.wav", tone(16000), 16000)
    manifest = write_manifest(corpus / "m.csv", [["ok_1", "train", "a.wav", "", ""], row])
    before = files_under(tmp_path)
    r = run("emotion_e2e.prepare", "--source=manifest", f"--input={manifest}", f"--output_dir={corpus / 'out'}",
            "--modalities=audio")
    assert r.returncode == 1, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: manifest {manifest}, line 3, column {column}: {received} is not allowed: expected "
                        rf"1 to 128 of letters, digits, .*, not starting with '\.'", last), last
    assert files_under(tmp_path) == before  # nothing outside the output folder, and no output folder


def test_recola_dimensions_are_names_of_folders_inside_the_gold_standard(tmp_path):
    with pytest.raises(ConfigError, match=r"ratings_gold_standard/: label dimension '\.\./\.\./x' is not allowed"):
        sources.recola_recordings(str(tmp_path), dimensions=("arousal", "../../x"))
    r = run("emotion_e2e.prepare", "--source=recola", f"--input={tmp_path}", "--recola_dimensions=arousal,a/b",
            f"--output_dir={tmp_path / 'out'}")
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith(
        f"error: {tmp_path}: ratings_gold_standard/: label dimension 'a/b' is not allowed"), r.stderr[-2000:]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_prepare_refuses_nan_or_infinite_audio_naming_the_file_and_frame(tmp_path, bad):
    x = tone(44100)
    x[44100:44200] = bad  # from exactly 1.0 s: sample 44101, the first of frame 26 (0.04·25, 0.04·26]
    wav = write_audio(tmp_path / "float.wav", x, 44100, codec="pcm_f32le", fmt="flt")
    manifest = write_manifest(tmp_path / "m.csv", [["r1", "train", "float.wav", "", ""]])
    r = run("emotion_e2e.prepare", "--source=manifest", f"--input={manifest}", f"--output_dir={tmp_path / 'out'}",
            "--modalities=audio")
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (f"error: recording r1 (train): {wav}: audio sample 44101 at 1.0000 s, "
                                                 f"in frame 26, is {bad}: expected finite samples")
    assert os.listdir(tmp_path / "out") == []


def test_label_times_in_milliseconds_get_a_hint_in_the_length_error(tmp_path):
    write_audio(tmp_path / "a.wav", tone(16000), 16000)
    (tmp_path / "ms.csv").write_text("time,arousal\n" + "".join(f"{t},0.1\n" for t in range(0, 1240, 40)))
    recs = sources.manifest_recordings(write_manifest(tmp_path / "m.csv", [["r", "train", "a.wav", "", "ms.csv"]]))
    with pytest.raises(DataError, match=r"recording r: lengths in frames differ by more than 1: .*'labels': 30000\}; "
                                        r"the label times step by whole multiples of 40 and look like milliseconds: "
                                        r"they must be seconds$"):
        convert.convert(recs, convert.ConvertConfig(modalities=("audio",)), str(tmp_path / "out"))
    write_label_csv(tmp_path / "long.csv", 2.0)  # seconds, only too long: no hint
    recs = sources.manifest_recordings(write_manifest(tmp_path / "m.csv", [["r", "train", "a.wav", "", "long.csv"]]))
    with pytest.raises(DataError, match=r"'labels': 50\}$"):
        convert.convert(recs, convert.ConvertConfig(modalities=("audio",)), str(tmp_path / "out"))


SHARD_BYTES = 300_000  # a 2 s demo recording's shard is about 360 kB: a disk with less free fills mid-shard


@pytest.mark.parametrize("workers", [1, 2])
def test_a_full_disk_while_writing_shards_is_one_line_and_keeps_the_previous_output(small_disk, workers):
    out = os.path.join(small_disk.path, "demo")
    args = ("emotion_e2e.prepare", "--source=demo", f"--output_dir={out}", "--demo_train=2", "--demo_dev=1",
            "--demo_seconds=2", f"--workers={workers}")
    assert run(*args).returncode == 0
    before = snapshot(out)
    small_disk.fill(leave=SHARD_BYTES)
    line = one_line_error(run(*args))
    assert re.fullmatch(rf"error: recording \w+ \(\w+\): cannot write {re.escape(out)}/\.incomplete/\S+\.part: "
                        rf"No space left on device; the previous output is kept", line), line
    assert snapshot(out) == before  # no shard, no metadata changed; no .incomplete/ or .part left
