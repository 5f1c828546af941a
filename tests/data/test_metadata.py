"""metadata.json: reading with errors that name the file, atomic writes, the check against the shards."""

import json
import os

import pytest

from emotion_e2e.config import TimeBase
from emotion_e2e.data import convert, metadata, schema
from emotion_e2e.errors import DataError
from records import SPF, FakeRecording, write_shards

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
    v1["partitions"] = {p: {k: v for k, v in info.items() if k != "label_names"}
                        for p, info in v2["partitions"].items()}
    v1["partitions"]["test"] = {"num_recordings": 0, "num_frames": 0, "face_found_ratio": 0.0, "labelled": False}
    v1["modalities"] = ["audio", "video"]  # version 1 called the face modality "video"
    path.write_text(json.dumps(v1))  # the layout of the converter before per-partition label names
    meta = metadata.read(str(converted))
    assert meta["metadata_version"] == 2 and meta["generation"] is None
    assert meta["modalities"] == ["audio", "face"]
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


def edit(directory, change):
    """Rewrites metadata.json by hand, as a bad state would have it."""
    path = directory / metadata.FILENAME
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))
    return metadata.read(str(directory))


def test_verify_accepts_what_the_converter_wrote(converted):
    metadata.verify(str(converted), metadata.read(str(converted)), ["dev", "train"])


def test_verify_finds_a_deleted_shard(converted):
    os.remove(converted / "train-00001-of-00002.tfrecord")
    with pytest.raises(DataError, match=rf"^{converted}/train-00001-of-00002\.tfrecord \(recording train_b, "
                                        rf"partition train\) is listed in {converted}/metadata\.json "
                                        rf"but does not exist"):
        metadata.verify(str(converted), metadata.read(str(converted)), ["dev", "train"])
    metadata.verify(str(converted), metadata.read(str(converted)), ["dev"])  # only the partitions asked for


def test_verify_finds_a_shard_the_metadata_does_not_list(converted):
    write_shards(converted / "other", [2], partition="dev")
    os.replace(converted / "other" / "dev-00000-of-00001.tfrecord", converted / "dev-00000-of-00002.tfrecord")
    with pytest.raises(DataError, match=rf"^{converted}/dev-00000-of-00002\.tfrecord is a shard of partition dev "
                                        rf"that {converted}/metadata\.json does not list"):
        metadata.verify(str(converted), metadata.read(str(converted)), ["dev"])


@pytest.mark.parametrize("delta", [-1, 1])
def test_verify_finds_frame_counts_understated_or_overstated(converted, delta):
    def change(meta):
        meta["recordings"][1]["num_frames"] += delta  # train_a: 3 frames
        meta["partitions"]["train"]["num_frames"] += delta
    meta = edit(converted, change)
    with pytest.raises(DataError, match=rf"^{converted}/train-00000-of-00002\.tfrecord: num_frames 3 in its first "
                                        rf"record, {3 + delta} in {converted}/metadata\.json"):
        metadata.verify(str(converted), meta, ["train"])


def test_verify_finds_partition_totals_that_disagree_with_the_recordings(converted):
    meta = edit(converted, lambda m: m["partitions"]["train"].update(num_frames=4))
    with pytest.raises(DataError, match=rf"^{converted}/metadata\.json: partition train has num_frames 4 but its "
                                        rf"recordings add up to 5"):
        metadata.verify(str(converted), meta, ["train"])


def test_verify_finds_a_shard_of_another_recording(converted):
    os.replace(converted / "train-00001-of-00002.tfrecord", converted / "train-00000-of-00002.tfrecord")
    write_shards(converted / "other", [2])  # keep the listing complete with a shard of recording train_0
    os.replace(converted / "other" / schema.shard_name("train", 0, 1), converted / "train-00001-of-00002.tfrecord")
    with pytest.raises(DataError, match=rf"^{converted}/train-00000-of-00002\.tfrecord: recording_id 'train_b' in its "
                                        rf"first record, 'train_a' in {converted}/metadata\.json"):
        metadata.verify(str(converted), metadata.read(str(converted)), ["train"])


def test_convert_refuses_to_keep_a_partition_whose_shards_disagree_with_the_metadata(converted):
    os.remove(converted / "dev-00000-of-00001.tfrecord")
    with pytest.raises(DataError, match=r"dev-00000-of-00001\.tfrecord \(recording dev_a, partition dev\) is "
                                        r"listed in .* but does not exist; convert partition dev again"):
        convert.convert([FakeRecording("train_a", "train", fail_at=1)], CFG, str(converted))


@pytest.mark.parametrize("edit,match", [
    (lambda m: m["recordings"][1].update(recording_id="../../../../../EVIL"),
     r"recordings\[1\]: recording id '\.\./\.\./\.\./\.\./\.\./EVIL' is not allowed"),
    (lambda m: m["recordings"][0].update(recording_id=""), r"recordings\[0\]: recording id '' is not allowed"),
    (lambda m: m["recordings"][2].update(partition="../x"), r"recordings\[2\]: partition '\.\./x' is not allowed"),
    (lambda m: m["partitions"].update({"../../x": m["partitions"].pop("dev")}),
     r"partitions: partition '\.\./\.\./x' is not allowed"),
    (lambda m: m["recordings"][1].update(shard="train/../../train-00001-of-00002.tfrecord"),
     r"recordings\[1\]: shard 'train/\.\./\.\./train-00001-of-00002\.tfrecord' is not a shard name of partition "
     r"train \(expected \{partition\}-\{index:05d\}-of-\{count:05d\}\.tfrecord\)"),
])
def test_a_hand_edited_name_that_would_become_a_path_is_refused_naming_the_file(converted, edit, match):
    path = converted / metadata.FILENAME
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=rf"^{path}, {match}"):
        metadata.read(str(converted))
