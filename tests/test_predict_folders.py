"""emotion_e2e.predict on folders and globs (media found by content, outputs mirroring the input
tree), summary.csv, --keep_going, and audio and picture of different lengths as real containers
hold them."""

import os
import shutil
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from disk_fixtures import one_line_error, snapshot
from emotion_e2e import predict
from emotion_e2e.config import TimeBase
from emotion_e2e.data import convert, media, sources
from emotion_e2e.errors import ConfigError, DataError
from face_fixtures import noise_frame
from media_fixtures import write_audio, write_av
from test_predict import LABELS, SECONDS, TOLERANCE, cli, exported, face_frame, predictor, run, tone  # noqa: F401

FPS = Fraction(25)
STEP = 0.04
QUARTILES = {"q25": 0.25, "median": 0.5, "q75": 0.75}


def talk(path, shift=0, audio_seconds=None):
    """An H.264 + AAC clip of the moving astronaut face: 31 frames at 25 fps, ``audio_seconds`` of sound
    (by default the picture's)."""
    frames = [face_frame(k + shift) for k in range(int(SECONDS * FPS) + 1)]
    audio = tone(44100, Fraction(len(frames), 25) if audio_seconds is None else audio_seconds)
    return write_av(path, frames, FPS, audio=audio, audio_rate=44100)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """``(folder, {name: path})``: a tree of two clips in subfolders (one with a '.dat' name), a
    text file, an audio-only WAV and a hidden folder; beside it a face-less video and a truncated one."""
    root = tmp_path_factory.mktemp("media")
    folder = root / "clips"
    for sub in ("day1", "day2/deep", ".cache"):
        (folder / sub).mkdir(parents=True)
    f = {"talk": talk(folder / "day1" / "talk.mp4"), "take": str(folder / "day2" / "deep" / "take.dat")}
    os.rename(talk(root / "take.mp4", shift=7), f["take"])  # an MP4 by its content, not its name
    f["voice"] = write_audio(folder / "day1" / "voice.wav", tone(48000), 48000)
    f["notes"] = str(folder / "notes.txt")  # FFmpeg opens any .txt, as ANSI art: its 'tty' demuxer
    (folder / "notes.txt").write_text("a list of what was filmed\n" * 40)
    f["hidden"] = shutil.copy(f["talk"], folder / ".cache" / "old.mp4")
    f["noise"] = write_av(root / "noise.mp4", [noise_frame(k, 120, 160) for k in range(31)], FPS,
                          audio=tone(44100, Fraction(31, 25)), audio_rate=44100)
    data = open(f["talk"], "rb").read()
    f["broken"] = str(root / "broken.mp4")
    with open(f["broken"], "wb") as out:
        out.write(data[:len(data) // 2])  # the index (moov) comes last: FFmpeg cannot open it
    return str(folder), f


def from_csvs(out, summary):
    """The summary's numbers computed again from the CSVs it describes (``out/<name>.csv``)."""
    rows = []
    for csv in summary:
        table = pd.read_csv(os.path.join(out, csv))
        rows.append({"duration_s": STEP * len(table), "frames": len(table), "face_coverage": table["face_found"].mean(),
                     **{f"{n}_mean": table[n].mean() for n in LABELS},
                     **{f"{n}_{s}": table[n].quantile(q) for n in LABELS for s, q in QUARTILES.items()}})
    return pd.DataFrame(rows)


def test_a_folder_is_walked_its_media_found_by_content_and_its_tree_mirrored(exported, predictor, clips, tmp_path):
    folder, f = clips
    out, lines = tmp_path / "out", []
    written = predict.predict_files(exported("multimodal"), [folder], str(out), progress=False, report=lines.append)
    assert written == [str(out / "day1" / "talk.csv"), str(out / "day2" / "deep" / "take.csv")]
    assert sorted(snapshot(out)) == ["day1/talk.csv", "day2/deep/take.csv", "summary.csv"]
    assert lines[0] == (f"{folder}: 2 media files; skipped 2 other files (not media with the streams the model "
                        f"needs: notes.txt, voice.wav)")
    assert len(lines) == 3 and "× real time -> " in lines[2]
    for name, csv in (("talk", written[0]), ("take", written[1])):
        want = predict.predict_file(predictor("multimodal"), f[name], progress=False)
        np.testing.assert_allclose(pd.read_csv(csv)[LABELS], want[LABELS], rtol=0, atol=TOLERANCE)

    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == ["file", "duration_s", "frames", "face_coverage",
                                     *[f"{n}_{s}" for n in LABELS for s in ("mean", "q25", "median", "q75")],
                                     "real_time_factor", "trimmed_s", "error"]
    assert summary["file"].tolist() == [f["talk"], f["take"]]
    want = from_csvs(out, ["day1/talk.csv", "day2/deep/take.csv"])
    pd.testing.assert_frame_equal(summary[want.columns], want, check_dtype=False, rtol=1e-5, atol=1e-5)
    assert (summary["face_coverage"] > 0.9).all() and (summary["real_time_factor"] > 0).all()
    assert summary["error"].isna().all()  # empty
    # AAC's priming makes the decoded sound of these clips one frame longer than the picture
    lengths = predict.predict_file(predictor("multimodal"), f["talk"], progress=False).attrs["lengths"]
    assert summary["trimmed_s"].tolist() == [pytest.approx(STEP * (lengths["audio"] - lengths["video"]))] * 2


def test_a_glob_is_relative_to_its_folders_without_wildcards(exported, clips, tmp_path):
    folder, f = clips
    out = tmp_path / "out"
    assert predict.predict_files(exported("multimodal"), [f"{folder}/**/*.mp4"], str(out), progress=False,
                                 report=lambda _: None) == [str(out / "day1" / "talk.csv")]  # not .cache/old.mp4
    assert sorted(snapshot(out)) == ["day1/talk.csv", "summary.csv"]
    lines = []
    assert predict.predict_files(exported("multimodal"), [f"{folder}/day2/**/*"], str(out), progress=False,
                                 report=lines.append) == [str(out / "deep" / "take.csv")]
    assert lines[0] == f"{folder}/day2/**/*: 1 media file"
    assert pd.read_csv(out / "summary.csv")["file"].tolist() == [f["take"]]  # this run's


def test_output_names_that_clash_or_would_be_hidden_are_refused_before_any_work(clips, tmp_path):
    folder, f = clips
    twins = tmp_path / "twins"
    (twins / "a").mkdir(parents=True)
    shutil.copy(f["talk"], twins / "a" / "b.mp4")
    shutil.copy(f["talk"], twins / "a" / "b.mov")
    summary = shutil.copy(f["talk"], tmp_path / "summary.mp4")
    no_model, out = str(tmp_path / "no model yet"), tmp_path / "out"
    cases = [([str(twins)], rf"inputs {twins}/a/b\.mov and {twins}/a/b\.mp4 would both write a/b\.csv"),
             ([f"{folder}/.*/*.mp4"], rf"input {folder}/\.cache/old\.mp4 would write \.cache/old\.csv, a hidden file"),
             ([summary], rf"input {summary} would write summary\.csv, where the run's summary goes"),
             ([f"{tmp_path}/*.avi"], rf"--input {tmp_path}/\*\.avi: no file matches it")]
    for inputs, message in cases:
        with pytest.raises(ConfigError, match=message):
            predict.predict_files(no_model, inputs, str(out))
    assert not out.exists()


def test_without_keep_going_the_first_bad_file_stops_the_run_and_keeps_what_was_written(exported, clips, tmp_path):
    _, f = clips
    out = tmp_path / "out"
    with pytest.raises(DataError, match=rf"^no face found in any of 31 frames of video {f['noise']}"):
        predict.predict_files(exported("multimodal"), [f["talk"], f["noise"], f["take"]], str(out), progress=False,
                              report=lambda _: None)
    assert sorted(os.listdir(out)) == ["summary.csv", "talk.csv"]  # take.dat is not reached
    summary = pd.read_csv(out / "summary.csv")
    assert summary["file"].tolist() == [f["talk"], f["noise"]]
    assert pd.isna(summary["error"][0]) and summary["error"][1].startswith(f"no face found in any of 31 frames of "
                                                                           f"video {f['noise']}")
    assert summary.loc[1].drop(["file", "error"]).isna().all()


def test_keep_going_records_each_bad_file_goes_on_and_exits_1(exported, clips, tmp_path):
    folder, f = clips
    out = tmp_path / "out"
    r = cli(f"--model={exported('multimodal')}", f"--input={folder}", f"--input={f['noise']}",
            f"--input={f['broken']}", f"--output_dir={out}", "--keep_going")
    assert one_line_error(r) == f"error: 2 of 4 inputs failed (each one's error is in {out}/summary.csv)"
    assert sorted(snapshot(out)) == ["day1/talk.csv", "day2/deep/take.csv", "summary.csv"]
    assert f"{f['noise']}: failed: no face found in any of 31 frames of video {f['noise']}" in r.stdout
    summary = pd.read_csv(out / "summary.csv")
    assert summary["file"].tolist() == [f["talk"], f["take"], f["noise"], f["broken"]]
    assert summary["error"][:2].isna().all() and (summary["frames"][:2] == 31).all()
    assert summary["error"][2].startswith(f"no face found in any of 31 frames of video {f['noise']}")
    assert summary["error"][3].startswith(f"{f['broken']}: cannot read media")
    assert summary.loc[2:, "frames"].isna().all()


# ---------------------------------------------------------------- audio and picture of different lengths

@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """``{frames the audio is longer: path}``: the face clip whose AAC track decodes 3 frames (107 ms:
    0.1 s more sound, the encoder's priming and last block) or 16 frames (0.64 s) longer than its 31
    frames of picture, as a file muxed without an edit list holds it."""
    d = tmp_path_factory.mktemp("uneven")
    files = {3: talk(d / "aac_3_frames_longer.mp4", audio_seconds=Fraction(31, 25) + Fraction(1, 10)),
             16: talk(d / "aac_16_frames_longer.mp4", audio_seconds=Fraction(31, 25) + Fraction(6, 10))}
    for extra, path in files.items():  # the premise, measured as the converter measures
        frames = {kind: TimeBase().frames_in(seconds) for kind, seconds in
                  (("audio", media.audio_duration(path)), ("video", media.video_duration(path)))}
        assert frames["audio"] - frames["video"] == extra, frames
    return files


def test_audio_up_to_half_a_second_longer_is_trimmed_and_reported(exported, predictor, uneven, tmp_path):
    model = predictor("multimodal")
    table = predict.predict_file(model, uneven[3], progress=False)
    assert predict.length_mismatch_frames(model.time_base) == 12  # 0.48 s: the whole frames in 0.5 s
    assert len(table) == 31 and table.attrs["frames"] == 31  # the picture's frames
    assert table.attrs["lengths"] == {"audio": 34, "video": 31} and table.attrs["trimmed_frames"] == 3
    # what predict did before, and what the converter still does: one frame at most
    with pytest.raises(DataError, match=r"lengths in frames differ by more than 1: .*'audio \(.*\)': 34"):
        predict.predict_file(model, uneven[3], max_length_mismatch=1, progress=False)
    with pytest.raises(DataError, match="differ by more than 1"):
        sources.MediaRecording("r", "test", audio=uneven[3], video=uneven[3]).frame_count(convert.ConvertConfig())
    lines, out = [], tmp_path / "out"
    predict.predict_files(exported("multimodal"), [uneven[3]], str(out), progress=False, report=lines.append)
    assert ", audio 0.12 s longer, trimmed in " in lines[0], lines
    assert pd.read_csv(out / "summary.csv")["trimmed_s"].tolist() == [pytest.approx(0.12)]


def test_audio_more_than_half_a_second_longer_is_refused(predictor, uneven):
    with pytest.raises(DataError) as e:
        predict.predict_file(predictor("multimodal"), uneven[16], progress=False)
    assert str(e.value) == (f"recording input: lengths in frames differ by more than 12: "
                            f"{{'audio ({uneven[16]})': 47, 'video ({uneven[16]})': 31}}")
