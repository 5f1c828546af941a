"""ARFF and CSV label files → the frame grid."""

import numpy as np
import pytest

from emotion_e2e.config import TimeBase
from emotion_e2e.data import labels
from emotion_e2e.errors import DataError

TB = TimeBase()


def write_arff(path, values, *, times=None, crlf=True, name="train_1", header=None):
    times = np.arange(len(values)) * 0.04 if times is None else times
    head = header or [
        "% AVEC 2016 gold standard", "@relation GoldStandard", "",
        "@attribute Instance_name string", "@attribute frameTime numeric",
        "@attribute 'GoldStandard' numeric", "", "", "@data", ""]
    rows = [f"'{name}',{t:.2f},{v}" if i % 2 else f"{name},{t:.2f},{v}"
            for i, (t, v) in enumerate(zip(times, values))]
    nl = "\r\n" if crlf else "\n"
    path.write_text(nl.join(head + rows[:3] + [""] + rows[3:]) + nl, newline="")
    return str(path)


def test_arff_avec_format_with_crlf_blank_lines_and_quotes(tmp_path):
    values = np.round(np.sin(np.arange(7501) / 50.0), 4)
    path = write_arff(tmp_path / "train_1.arff", values)
    times, got = labels.read_arff(path)
    assert len(times) == 7501 and times[0] == 0.0 and times[-1] == pytest.approx(300.0)
    np.testing.assert_array_equal(got, values)
    track = labels.arff_labels({"arousal": path, "valence": path}, TB, "train_1")
    assert track.names == ("arousal", "valence")
    assert track.values.shape == (7500, 2) and track.values.dtype == np.float32
    # the t = 0 row is dropped: frame i carries the value at 0.04·i
    np.testing.assert_allclose(track.values[:, 0], values[1:], atol=1e-6)


def test_arff_unexpected_attributes(tmp_path):
    header = ["@relation x", "@attribute Instance_name string", "@attribute frameTime numeric",
              "@attribute arousal numeric", "@attribute extra numeric", "@data"]
    path = write_arff(tmp_path / "bad.arff", [0.1, 0.2, 0.3], header=header)
    with pytest.raises(DataError, match=r"bad\.arff.*unexpected ARFF attributes.*extra"):
        labels.read_arff(path)


def test_arff_without_data_section_and_bad_rows(tmp_path):
    p = tmp_path / "nodata.arff"
    p.write_text("@relation x\n@attribute Instance_name string\n@attribute frameTime numeric\n"
                 "@attribute GoldStandard numeric\n")
    with pytest.raises(DataError, match="no @data"):
        labels.read_arff(str(p))
    p2 = tmp_path / "short.arff"
    p2.write_text(p.read_text() + "@data\ntrain_1,0.00,0.1\ntrain_1,0.04\n")
    with pytest.raises(DataError, match=r"short\.arff, line 7: expected 3 values"):
        labels.read_arff(str(p2))


def test_nan_label_names_recording_and_frame(tmp_path):
    values = [0.1] * 20
    values[11] = "?"  # ARFF missing value, at t = 0.44 s: frame 11
    path = write_arff(tmp_path / "train_3.arff", values)
    with pytest.raises(DataError, match=r"train_3\.arff \(recording train_3, arousal\).*frame 11"):
        labels.arff_labels({"arousal": path}, TB, "train_3")
    values[11] = "inf"
    path = write_arff(tmp_path / "train_3.arff", values)
    with pytest.raises(DataError, match="frame 11"):
        labels.arff_labels({"arousal": path}, TB, "train_3")


def test_csv_at_another_rate_is_interpolated(tmp_path):
    t = np.arange(0, 10.001, 0.1)  # 10 Hz annotation
    a, v = 0.1 * t, np.cos(t)
    p = tmp_path / "lab.csv"
    p.write_text("time,Arousal,VALENCE\n" + "\n".join(f"{x:.1f},{y},{z}" for x, y, z in zip(t, a, v)))
    track = labels.csv_labels(str(p), TB, "rec")
    assert track.names == ("Arousal", "VALENCE") and track.num_frames == 250
    grid = 0.04 * np.arange(1, 251)
    np.testing.assert_allclose(track.values[:, 0], 0.1 * grid, atol=1e-6)
    np.testing.assert_allclose(track.values[:, 1], np.interp(grid, t, v), atol=1e-6)


def test_csv_errors(tmp_path):
    p = tmp_path / "no_time.csv"
    p.write_text("t,arousal\n0,1\n1,2\n")
    with pytest.raises(DataError, match=r"no_time\.csv.*'time' column.*\['t', 'arousal'\]"):
        labels.csv_labels(str(p), TB, "r1")
    p = tmp_path / "unsorted.csv"
    p.write_text("time,arousal\n0,1\n0.08,2\n0.04,3\n")
    with pytest.raises(DataError, match="strictly increasing"):
        labels.csv_labels(str(p), TB, "r1")
    p = tmp_path / "nan.csv"
    p.write_text("time,arousal\n0,1\n0.04,2\n0.08,nan\n0.12,1\n")
    with pytest.raises(DataError, match=r"recording r1.*frame 2"):
        labels.csv_labels(str(p), TB, "r1")
    with pytest.raises(DataError, match="cannot read label file"):
        labels.csv_labels(str(tmp_path / "missing.csv"), TB, "r1")


def test_dimensions_of_different_length(tmp_path):
    a = write_arff(tmp_path / "a.arff", [0.0] * 101)
    b = write_arff(tmp_path / "b.arff", [0.0] * 100)
    assert labels.arff_labels({"arousal": a, "valence": b}, TB, "r").num_frames == 99  # within one: trim
    c = write_arff(tmp_path / "c.arff", [0.0] * 90)
    with pytest.raises(DataError, match=r"recording r: .*'arousal': 100, 'valence': 89"):
        labels.arff_labels({"arousal": a, "valence": c}, TB, "r")


def test_time_going_backwards_names_the_rows_and_both_times(tmp_path):
    p = tmp_path / "unsorted.csv"
    p.write_text("time,arousal\n0,1\n0.08,2\n0.04,3\n0.12,4\n")
    with pytest.raises(DataError, match=r"unsorted\.csv \(recording r1\): label times must be strictly increasing; "
                                        r"time 0\.040 s at data row 3 is not after 0\.080 s at data row 2"):
        labels.csv_labels(str(p), TB, "r1")
    times = np.arange(10) * 0.04
    times[6] = times[5]  # a repeated time
    path = write_arff(tmp_path / "train_4.arff", [0.1] * 10, times=times)
    # header of 10 lines, the data rows from line 11 with a blank line after the third: row 7 is on line 18
    with pytest.raises(DataError, match=r"train_4\.arff \(recording train_4, valence\): label times must be strictly "
                                        r"increasing; time 0\.200 s at line 18 is not after 0\.200 s at line 17"):
        labels.arff_labels({"valence": path}, TB, "train_4")


def test_nan_label_names_the_column(tmp_path):
    p = tmp_path / "nan.csv"
    p.write_text("time,arousal,valence\n0,1,1\n0.04,2,2\n0.08,3,nan\n0.12,1,1\n")
    with pytest.raises(DataError, match=r"nan\.csv \(recording r1\): label value nan \(column valence\) at time "
                                        r"0\.080 s \(data row 3\), frame 2; labels must be finite"):
        labels.csv_labels(str(p), TB, "r1")


@pytest.mark.parametrize("header,name,columns", [("time,arousal,arousal", "arousal", "2 and 3"),
                                                 ("time,arousal,time", "time", "1 and 3"),
                                                 ("time, valence ,valence", "valence", "2 and 3")])
def test_a_column_named_twice_is_refused_naming_the_file_and_the_column(tmp_path, header, name, columns):
    p = tmp_path / "twice.csv"
    p.write_text(f"{header}\n0,1,2\n0.04,2,3\n0.08,3,4\n")
    with pytest.raises(DataError, match=rf"twice\.csv \(recording r1\): column '{name}' appears twice in the header "
                                        rf"\(columns {columns} of .*\); every column needs its own name"):
        labels.csv_labels(str(p), TB, "r1")


def test_steps_that_are_whole_multiples_of_the_frame_step_in_milliseconds_are_flagged(tmp_path):
    p = tmp_path / "ms.csv"
    p.write_text("time,arousal\n" + "".join(f"{t},{t / 1000}\n" for t in range(0, 1240, 40)))
    assert labels.csv_labels(str(p), TB, "r1").steps_in_milliseconds
    assert labels.steps_in_milliseconds(np.array([0, 80, 120, 200]), TB)  # 2, 1, 2 frame steps
    assert not labels.steps_in_milliseconds(np.arange(31) * 0.04, TB)  # seconds
    assert not labels.steps_in_milliseconds(np.arange(31) * 10.0, TB)  # 10 ms: not a whole number of frames
    seconds = write_arff(tmp_path / "s.arff", [0.0] * 31)
    assert not labels.arff_labels({"arousal": seconds}, TB, "r").steps_in_milliseconds
