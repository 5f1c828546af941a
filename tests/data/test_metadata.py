"""metadata.json: reading with errors that name the file, atomic writes, the check against the shards."""

import json
import os

import pytest

from emotion_e2e.config import TimeBase
from emotion_e2e.data import convert, metadata
from emotion_e2e.errors import DataError
from records import SPF, FakeRecording

CFG = convert.ConvertConfig(time_base=TimeBase(frame_step=0.04, sample_rate=SPF * 25))


@pytest.fixture
def converted(tmp_path):
    recs = [FakeRecording("train_a", "train", index=0, length=3), FakeRecording("train_b", "train", index=1, length=2),
            FakeRecording("dev_a", "dev", index=2, length=2)]
    convert.convert(recs, CFG, str(tmp_path))
    return tmp_path


def test_read_round_trips_what_the_converter_wrote(converted):
    meta = metadata.read(str(converted))
    assert meta == json.loads((converted / metadata.FILENAME).read_text())
    assert metadata.read(str(converted / "elsewhere"), missing_ok=True) is None
    with pytest.raises(DataError, match=r"elsewhere/metadata\.json not found"):
        metadata.read(str(converted / "elsewhere"))


def test_truncated_file_is_a_data_error_naming_it(converted):
    path = converted / metadata.FILENAME
    path.write_bytes(path.read_bytes()[:-40])  # a disk-full or copy cut short
    with pytest.raises(DataError, match=rf"{path} is not valid JSON \(.* at line \d+, column \d+\)"):
        metadata.read(str(converted))


def test_other_schema_version_is_refused(converted):
    path = converted / metadata.FILENAME
    meta = json.loads(path.read_text())
    path.write_text(json.dumps(dict(meta, schema_version=99)))
    with pytest.raises(DataError, match=rf"{path}: schema_version 99, this code reads schema version 1"):
        metadata.read(str(converted))
    path.write_text("[]")
    with pytest.raises(DataError, match=rf"{path}: schema_version 'list'"):
        metadata.read(str(converted))


def test_version_1_files_are_read_with_per_partition_label_names_and_later_versions_refused(converted):
    path = converted / metadata.FILENAME
    v2 = json.loads(path.read_text())
    v1 = {k: v for k, v in v2.items() if k not in ("metadata_version", "generation")}
    v1["partitions"] = {p: {k: v for k, v in info.items() if k != "label_names"} for p, info in v2["partitions"].items()}
    v1["partitions"]["test"] = {"num_recordings": 0, "num_frames": 0, "face_found_ratio": 0.0, "labelled": False}
    path.write_text(json.dumps(v1))  # the layout of the converter before per-partition label names
    meta = metadata.read(str(converted))
    assert meta["metadata_version"] == 2 and meta["generation"] is None
    assert metadata.label_names(meta, "train") == ("arousal", "valence") and metadata.label_names(meta, "test") == ()
    path.write_text(json.dumps(dict(v2, metadata_version=3)))
    with pytest.raises(DataError, match=rf"{path}: metadata_version 3, this code reads versions 1 and 2"):
        metadata.read(str(converted))


def test_partition_helpers(converted):
    meta = metadata.read(str(converted))
    assert [(r["recording_id"], r["shard"]) for r in metadata.recordings(meta, "train")] == [
        ("train_a", "train-00000-of-00002.tfrecord"), ("train_b", "train-00001-of-00002.tfrecord")]
    assert metadata.label_names(meta, "dev") == ("arousal", "valence")
    with pytest.raises(DataError, match=r"partition 'test' is not in the metadata; partitions: \['dev', 'train'\]"):
        metadata.recordings(meta, "test")


def test_write_replaces_atomically_and_leaves_no_temporary_file(tmp_path):
    metadata.write(str(tmp_path), {"a": 1})
    metadata.write(str(tmp_path), {"a": 2})
    assert os.listdir(tmp_path) == [metadata.FILENAME]
    assert json.loads((tmp_path / metadata.FILENAME).read_text()) == {"a": 2}
