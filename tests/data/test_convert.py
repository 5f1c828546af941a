"""The conversion engine: shards, metadata, atomic replacement, workers."""

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from disk_fixtures import snapshot
from emotion_e2e.config import FaceConfig, InputConfig, ReaderConfig, TimeBase
from emotion_e2e.data import convert, metadata, reader
from emotion_e2e.errors import DataError
from records import FACE, LABELS, SPF, FakeRecording, frame_content

CFG = convert.ConvertConfig(time_base=TimeBase(frame_step=0.04, sample_rate=SPF * 25))


def corpus(**overrides):
    recs = [FakeRecording("train_b", "train", index=1, length=6), FakeRecording("train_a", "train", index=0, length=4),
            FakeRecording("dev_a", "dev", index=2, length=3), FakeRecording("test_a", "test", index=3, length=2,
                                                                             labelled=False)]
    return [overrides.get(r.recording_id, r) for r in recs]


def listing(d):
    return sorted(os.listdir(d))


def without_generation(meta):
    return {k: v for k, v in meta.items() if k != "generation"}


@contextlib.contextmanager
def unwritable(path):
    """Makes ``path`` refuse writes for real. The tests run as root, which ignores permission
    bits, but not the immutable attribute (``chattr +i``, ext4 and most local filesystems)."""
    if os.geteuid() != 0:
        os.chmod(path, 0o555 if os.path.isdir(path) else 0o444)
        undo = lambda: os.chmod(path, 0o755 if os.path.isdir(path) else 0o644)  # noqa: E731
    elif shutil.which("chattr") and not subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        undo = lambda: subprocess.run(["chattr", "-i", str(path)], check=True)  # noqa: E731
    else:
        pytest.skip(f"cannot make {path} unwritable for root here (chattr +i unsupported)")
    try:
        yield
    finally:
        undo()


def test_shards_metadata_and_round_trip(tmp_path):
    meta = convert.convert(corpus(), CFG, str(tmp_path), source="fake")
    assert listing(tmp_path) == ["dev-00000-of-00001.tfrecord", "metadata.json", "test-00000-of-00001.tfrecord",
                                 "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    assert meta == json.loads((tmp_path / "metadata.json").read_text())
    assert meta["label_names"] == list(LABELS) and meta["source"] == "fake"
    train = meta["partitions"]["train"]
    assert train["num_recordings"] == 2 and train["num_frames"] == 10 and train["labelled"]
    assert meta["partitions"]["test"]["labelled"] is False and "labels" not in meta["partitions"]["test"]
    # statistics against NumPy over the frames written
    y = np.array([frame_content(k, i)[2] for k, n in ((0, 4), (1, 6)) for i in range(1, n + 1)])
    for d, name in enumerate(LABELS):
        s = train["labels"][name]
        assert s["mean"] == pytest.approx(y[:, d].mean(), abs=1e-6)
        assert s["std"] == pytest.approx(y[:, d].std(), abs=1e-6)
        assert (s["min"], s["max"]) == pytest.approx((y[:, d].min(), y[:, d].max()), abs=1e-6)
    rec = {r["recording_id"]: r for r in meta["recordings"]}
    assert rec["train_a"]["shard"] == "train-00000-of-00002.tfrecord"  # id order within a partition
    assert rec["train_b"]["num_frames"] == 6 and rec["train_b"]["face_found_ratio"] == pytest.approx(0.5)
    # written → read back through the reader: every frame, exact audio and labels
    inputs = InputConfig(face_size=FACE, samples_per_frame=SPF, label_names=LABELS)
    rc = ReaderConfig(seq_len=4, batch_size=1)
    got = [(b["recording_id"][0].numpy().decode(), int(f), b["audio"][0, t].numpy(), b["labels"][0, t].numpy())
           for b in reader.make_dataset(str(tmp_path / "train-*.tfrecord"), inputs, rc, training=False)
           for t, f in enumerate(b["frame"][0].numpy()) if f]
    assert [(r, f) for r, f, _, _ in got] == [("train_a", i) for i in range(1, 5)] + [("train_b", i) for i in range(1, 7)]
    for r, f, audio, labels in got:
        a, _, y = frame_content(0 if r == "train_a" else 1, f)
        np.testing.assert_array_equal(audio, a)
        np.testing.assert_array_equal(labels, y)


def test_failure_leaves_previous_output_intact_and_no_partial_shard(tmp_path):
    convert.convert(corpus(), CFG, str(tmp_path))
    before = snapshot(tmp_path)
    bad = corpus(train_b=FakeRecording("train_b", "train", index=1, length=6, fail_at=4))
    with pytest.raises(DataError, match="recording train_b, frame 4: injected failure"):
        convert.convert(bad, CFG, str(tmp_path))
    assert snapshot(tmp_path) == before


def test_rerun_replaces_shards_and_removes_stale_ones(tmp_path):
    convert.convert(corpus(), CFG, str(tmp_path))
    (tmp_path / convert.INCOMPLETE).mkdir()
    (tmp_path / convert.INCOMPLETE / "train-00000-of-00002.tfrecord.part").write_bytes(b"left by a killed run")
    (tmp_path / ".tmp-train-00000-of-00002.tfrecord").write_bytes(b"left by a killed run of an earlier version")
    fewer = [FakeRecording("train_a", "train", index=0, length=4)]
    meta = convert.convert(fewer, CFG, str(tmp_path))
    # train now has one shard; dev and test, not re-converted, are kept with their metadata
    assert listing(tmp_path) == ["dev-00000-of-00001.tfrecord", "metadata.json", "test-00000-of-00001.tfrecord",
                                 "train-00000-of-00001.tfrecord"]
    assert sorted(meta["partitions"]) == ["dev", "test", "train"]
    assert [r["recording_id"] for r in meta["recordings"]] == ["dev_a", "test_a", "train_a"]
    again = convert.convert(fewer, CFG, str(tmp_path))
    assert without_generation(again) == without_generation(meta) and again["generation"] != meta["generation"]


# A second run over the corpus of corpus(): train loses a recording, dev changes; test is kept.
SECOND = [FakeRecording("train_a", "train", index=0, length=5), FakeRecording("dev_a", "dev", index=4, length=2)]


def test_metadata_that_cannot_be_written_leaves_the_previous_output_byte_identical(tmp_path):
    convert.convert(corpus(), CFG, str(tmp_path))
    before = snapshot(tmp_path)
    with unwritable(tmp_path / metadata.FILENAME):  # new shards are in place when the metadata write fails
        with pytest.raises(DataError, match=rf"^cannot replace the output in {tmp_path}: .*metadata\.json.*; "
                                            rf"the previous output is kept$"):
            convert.convert(SECOND, CFG, str(tmp_path))
    assert snapshot(tmp_path) == before
    assert listing(tmp_path) == sorted(n for n in before if "/" not in n)  # no hidden folder is left either


def test_a_failure_midway_through_the_renames_rolls_back(tmp_path, monkeypatch):
    convert.convert(corpus(), CFG, str(tmp_path))
    before = snapshot(tmp_path)
    real_replace, placed = os.replace, []

    def replace(src, dst):
        if str(src).endswith(".part") and str(dst).endswith(".tfrecord"):
            if placed:  # the first new shard is in place, the second fails
                raise OSError(28, "No space left on device", str(dst))
            placed.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(DataError, match=r"No space left on device.*the previous output is kept$"):
        convert.convert(SECOND, CFG, str(tmp_path))
    assert placed and snapshot(tmp_path) == before


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no rollback."""


def kill(*args):
    raise Killed()


def test_a_run_killed_at_any_step_of_the_commit_is_repaired_by_the_next_run(tmp_path, monkeypatch):
    test_b = [FakeRecording("test_b", "test", index=5, length=3, labelled=False)]  # the next run
    old, new = tmp_path / "old", tmp_path / "new"  # references: the killed run not committed, committed
    for ref, runs in ((old, [corpus(), test_b]), (new, [corpus(), SECOND, test_b])):
        for recs in runs:
            convert.convert(recs, CFG, str(ref))
    real_replace, steps = os.replace, {"left": 0}

    def replace(src, dst):  # every rename of the commit is a step; the kill comes before step k
        steps["left"] -= 1
        if steps["left"] == 0:
            kill()
        real_replace(src, dst)

    k = 0
    while True:
        k += 1
        out = tmp_path / f"kill{k}"
        convert.convert(corpus(), CFG, str(out))
        with monkeypatch.context() as m:
            m.setattr(os, "replace", replace)
            m.setattr(convert, "_roll_back", lambda *a: None)  # a killed process rolls nothing back
            m.setattr(convert, "_discard_backup", kill)
            steps["left"] = k
            with pytest.raises(Killed):
                convert.convert(SECOND, CFG, str(out))
        committed = steps["left"] > 0  # every rename was done: killed before the backup was deleted
        if not committed and (out / metadata.BACKUP / metadata.JOURNAL).exists():
            # shards may have moved: readers refuse the folder until a run repairs it
            with pytest.raises(DataError, match=rf"^{out}: a conversion into it was interrupted"):
                metadata.read(str(out))
        else:  # killed before any shard moved, or after the commit: a consistent folder
            assert metadata.read(str(out))["recordings"]
        convert.convert(test_b, CFG, str(out))
        expected = new if committed else old
        assert {n: b for n, b in snapshot(out).items() if n != metadata.FILENAME} == {
            n: b for n, b in snapshot(expected).items() if n != metadata.FILENAME}, k
        meta = metadata.read(str(out))
        assert without_generation(meta) == without_generation(metadata.read(str(expected)))
        metadata.verify(str(out), meta, meta["partitions"])
        if committed:
            break
    assert k > 5  # journal, 3 old shards moved, 2 new shards placed, metadata: every step was a kill point


def test_workers_give_the_same_bytes(tmp_path):
    convert.convert(corpus(), CFG, str(tmp_path / "one"))
    convert.convert(corpus(), CFG, str(tmp_path / "two"), workers=2)
    for name in listing(tmp_path / "one"):
        if name != metadata.FILENAME:
            assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert without_generation(metadata.read(str(tmp_path / "one"))) == without_generation(
        metadata.read(str(tmp_path / "two")))


def test_worker_failure_is_reported_with_its_message(tmp_path):
    bad = corpus(dev_a=FakeRecording("dev_a", "dev", index=2, length=3, fail_at=2))
    with pytest.raises(DataError, match="recording dev_a, frame 2"):
        convert.convert(bad, CFG, str(tmp_path), workers=2)
    assert listing(tmp_path) == []  # no shard, no temporary file


def test_duplicate_ids_and_empty_corpus(tmp_path):
    dupes = [FakeRecording("x", "train"), FakeRecording("x", "train", index=1)]
    with pytest.raises(DataError, match=r"partition train: duplicate recording ids \['x'\]"):
        convert.convert(dupes, CFG, str(tmp_path))
    with pytest.raises(DataError, match="no recordings"):
        convert.convert([], CFG, str(tmp_path))


def test_output_dir_that_is_a_file_or_cannot_be_created_stops_before_any_work(tmp_path):
    # every recording fails at its first frame: the error below proves no recording was opened
    never = [FakeRecording("train_a", "train", fail_at=1)]
    f = tmp_path / "somefile"
    f.write_text("not a folder")
    with pytest.raises(DataError, match=rf"^output directory {f} is a file, not a directory$"):
        convert.convert(never, CFG, str(f))
    with pytest.raises(DataError, match=rf"^cannot create output directory {f}/out: Not a directory$"):
        convert.convert(never, CFG, str(f / "out"))
    assert listing(tmp_path) == ["somefile"] and f.read_text() == "not a folder"


def test_unwritable_output_dir_stops_before_any_work(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with unwritable(out):
        with pytest.raises(DataError, match=rf"^output directory {out} is not writable: "):
            convert.convert([FakeRecording("train_a", "train", fail_at=1)], CFG, str(out))
    assert listing(out) == []


def test_a_recording_in_two_partitions_is_refused_before_converting(tmp_path):
    leak = [FakeRecording("spk1", "train", fail_at=1), FakeRecording("spk1", "dev", index=1, fail_at=1)]
    with pytest.raises(DataError, match=r"^recording id spk1 is in two partitions, dev and train: "):
        convert.convert(leak, CFG, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    convert.convert(corpus(), CFG, str(tmp_path))
    before = snapshot(tmp_path)
    # train is kept (only dev is converted) and holds train_a already
    with pytest.raises(DataError, match=rf"^recording id train_a \(partition dev\) is already in partition train "
                                        rf"of {tmp_path}/metadata.json, which this run keeps: "):
        convert.convert([FakeRecording("train_a", "dev", fail_at=1)], CFG, str(tmp_path))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("first, second", [("labelled", "test"), ("test", "labelled")])
def test_converting_some_partitions_keeps_the_others_with_their_own_label_names(tmp_path, first, second):
    """The RECOLA case: the unlabelled test partition converted apart from train and dev, in either order."""
    part = {"labelled": [r for r in corpus() if r.partition != "test"],
            "test": [r for r in corpus() if r.partition == "test"]}
    out, whole = tmp_path / "out", tmp_path / "whole"
    convert.convert(part[first], CFG, str(out))
    kept = snapshot(out)
    meta = convert.convert(part[second], CFG, str(out))
    metadata.verify(str(out), meta, ["dev", "test", "train"])
    assert {n: b for n, b in snapshot(out).items() if n in kept and n.endswith(".tfrecord")} == {
        n: b for n, b in kept.items() if n.endswith(".tfrecord")}  # the kept shards are untouched
    assert meta["label_names"] == list(LABELS)
    assert {p: info["label_names"] for p, info in meta["partitions"].items()} == {
        "dev": list(LABELS), "test": [], "train": list(LABELS)}
    # two runs give what one run over the whole corpus gives: the same files, the same metadata
    expected = convert.convert(corpus(), CFG, str(whole))
    assert without_generation(meta) == without_generation(expected)
    assert {n: b for n, b in snapshot(out).items() if n != metadata.FILENAME} == {
        n: b for n, b in snapshot(whole).items() if n != metadata.FILENAME}


def test_a_partition_with_other_label_names_than_the_kept_ones_is_refused_and_nothing_changes(tmp_path):
    convert.convert(corpus(), CFG, str(tmp_path))
    before = snapshot(tmp_path)
    dev = FakeRecording("dev_a", "dev", index=2, label_names=("joy", "anger"))
    with pytest.raises(DataError, match=rf"^partition dev has labels \['joy', 'anger'\] but partition train, kept in "
                                        rf"{tmp_path}/metadata.json, has \['arousal', 'valence'\]"):
        convert.convert([dev], CFG, str(tmp_path))
    assert snapshot(tmp_path) == before
    # replacing every labelled partition with new names is fine: the unlabelled test partition has none
    train = FakeRecording("train_a", "train", label_names=("joy", "anger"))
    meta = convert.convert([train, dev], CFG, str(tmp_path))
    assert meta["label_names"] == ["joy", "anger"] and meta["partitions"]["test"]["label_names"] == []


def test_a_partition_mixing_labelled_and_unlabelled_recordings_is_refused(tmp_path):
    mixed = [FakeRecording("test_a", "test"), FakeRecording("test_b", "test", index=1, labelled=False)]
    with pytest.raises(DataError, match=r"^partition test mixes labelled recordings \['test_a'\] and unlabelled "
                                        r"ones \['test_b'\]"):
        convert.convert(mixed, CFG, str(tmp_path))
    assert listing(tmp_path) == []


@pytest.mark.parametrize("setting, value", [
    ("time_base", TimeBase(frame_step=0.02, sample_rate=SPF * 50)),
    ("modalities", ("audio",)),
    ("face", FaceConfig(size=32)),
    ("face", FaceConfig(align="eyes")),
])
def test_kept_partitions_converted_with_other_settings_are_refused_before_converting(tmp_path, setting, value):
    convert.convert(corpus(), CFG, str(tmp_path))
    before = snapshot(tmp_path)
    cfg = dataclasses.replace(CFG, **{setting: value})
    with pytest.raises(DataError, match=rf"^{tmp_path}/metadata.json: partitions test, train, which this run keeps, "
                                        rf"were converted with {setting} .*; this run has {setting} "):
        convert.convert([FakeRecording("dev_a", "dev", fail_at=1)], cfg, str(tmp_path))
    assert snapshot(tmp_path) == before


def test_audio_of_the_wrong_length_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"recording train_a, frame 1: audio of shape \(8,\), expected \(640,\)"):
        convert.convert([FakeRecording("train_a", "train")], convert.ConvertConfig(), str(tmp_path))


@pytest.mark.parametrize("rid,partition,match", [
    ("../../../EVIL", "train", r"FakeRecording: recording id '\.\./\.\./\.\./EVIL' is not allowed: expected 1 to 128 "
                               r"of letters, digits, '_', '-' and '\.', not starting with '\.'"),
    ("a/b", "train", "recording id 'a/b' is not allowed"),
    ("", "train", "recording id '' is not allowed"),
    (".hidden", "train", r"recording id '\.hidden' is not allowed"),
    ("x" * 129, "train", r"recording id 'x{128}'\.\.\. \(129 characters\) is not allowed"),
    ("train_a", "../../x", r"FakeRecording train_a: partition '\.\./\.\./x' is not allowed: expected 1 to 128 of "
                           r"letters, digits, '_' and '\.', not starting with '\.'"),
    ("train_a", "train-x", "partition 'train-x' is not allowed"),  # train-*.tfrecord would match its shards
])
def test_a_recording_whose_id_or_partition_is_not_a_name_cannot_be_built(rid, partition, match):
    with pytest.raises(DataError, match=match):
        FakeRecording(rid, partition)


def test_names_that_are_allowed(tmp_path):
    recs = [FakeRecording("Spk-01_take.2", "train.v2", length=2), FakeRecording("x" * 128, "train.v2", index=1)]
    meta = convert.convert(recs, CFG, str(tmp_path))
    assert sorted(r["recording_id"] for r in meta["recordings"]) == ["Spk-01_take.2", "x" * 128]
    assert listing(tmp_path) == ["metadata.json", "train.v2-00000-of-00002.tfrecord", "train.v2-00001-of-00002.tfrecord"]


@dataclasses.dataclass(frozen=True)
class NonFiniteAudio(FakeRecording):
    """A recording from the Python API whose audio turns NaN or infinite at frame ``bad_at``."""

    bad_at: int = 3
    value: float = float("nan")

    def open(self, cfg):
        n, names, frames = super().open(cfg)
        return n, names, (f._replace(audio=np.where(np.arange(SPF) >= 5, self.value, f.audio).astype(np.float32))
                          if i == self.bad_at else f for i, f in enumerate(frames, start=1))


@pytest.mark.parametrize("value", [float("nan"), float("-inf")])
def test_non_finite_audio_from_the_python_api_is_refused_naming_recording_and_frame(tmp_path, value):
    with pytest.raises(DataError, match=rf"recording train_a, frame 3: 3 of its {SPF} audio samples are not finite "
                                        rf"\(the first, sample 6, is {value}\); audio must be finite"):
        convert.convert([NonFiniteAudio("train_a", "train", value=value)], CFG, str(tmp_path))
    assert listing(tmp_path) == []
