"""The tf.data reader: eval coverage, training windows, checks, sharding, augmentation."""

import os

import numpy as np
import pytest
import tensorflow as tf

from emotion_e2e.config import AugmentConfig, InputConfig, ReaderConfig
from emotion_e2e.data import reader
from emotion_e2e.errors import DataError
from records import FACE, LABELS, SPF, frame_content, write_shards

LENGTHS = [7, 10, 4, 1]
SEQ = 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("shards")
    write_shards(d, LENGTHS)
    return os.path.join(str(d), "train-*.tfrecord")


INPUT_FIELDS = ("modalities", "label_names", "samples_per_frame", "face_size")


def cfg(**kw):
    """``(InputConfig, ReaderConfig)`` for the test shards, with ``kw`` overriding either."""
    base = dict(seq_len=SEQ, batch_size=2, face_size=FACE, samples_per_frame=SPF, label_names=LABELS,
                shuffle_buffer=8, cycle_length=2)
    merged = {**base, **kw}
    inputs = InputConfig(**{k: v for k, v in merged.items() if k in INPUT_FIELDS})
    return inputs, ReaderConfig(**{k: v for k, v in merged.items() if k not in INPUT_FIELDS})


def frames_of(ds):
    """Yields (recording_id, frame, audio, face, labels) for every unmasked frame."""
    for b in ds:
        for j in range(b["mask"].shape[0]):
            rid = b["recording_id"][j].numpy().decode()
            for t in range(SEQ):
                if b["mask"][j, t]:
                    yield (rid, int(b["frame"][j, t]), b["audio"][j, t].numpy(), b["face"][j, t].numpy(),
                           b["labels"][j, t].numpy())


def test_eval_yields_every_frame_once_in_order_with_exact_content(shards):
    seen = list(frames_of(reader.make_dataset(shards, *cfg(), training=False)))
    expected = [(f"train_{k}", i) for k, n in enumerate(LENGTHS) for i in range(1, n + 1)]
    assert [(r, i) for r, i, *_ in seen] == expected
    for rid, i, audio, face, labels in seen:
        a, f, y = frame_content(int(rid.split("_")[1]), i)
        np.testing.assert_array_equal(audio, a)  # audio and labels round-trip exactly
        np.testing.assert_array_equal(labels, y)
        assert np.abs(face * 255 - f).max() <= 3  # faces within JPEG tolerance


def test_eval_pads_the_last_window_and_masks_it(shards):
    batches = list(reader.make_dataset(shards, *cfg(batch_size=1), training=False))
    masks = [b["mask"][0].numpy().tolist() for b in batches]
    # 7 frames → 4 + 3, 10 → 4 + 4 + 2, 4 → 4, 1 → 1
    assert [int(sum(m)) for m in masks] == [4, 3, 4, 4, 2, 4, 1]
    last = batches[1]
    assert last["frame"][0].numpy().tolist() == [5, 6, 7, 0]
    assert np.all(last["audio"][0, 3].numpy() == 0) and np.all(last["labels"][0, 3].numpy() == 0)
    assert batches[0]["audio"].shape == (1, SEQ, SPF) and batches[0]["face"].shape == (1, SEQ, FACE, FACE, 3)


def test_training_windows_stay_inside_one_recording_and_move_between_passes(shards):
    ds = reader.make_dataset(shards, *cfg(), training=True, seed=3, repeat=True)
    starts = {}
    for b in ds.take(60):
        assert b["mask"].numpy().min() == 1  # training windows are full
        for j in range(2):
            frames = b["frame"][j].numpy()
            rid = b["recording_id"][j].numpy().decode()
            np.testing.assert_array_equal(frames, np.arange(frames[0], frames[0] + SEQ))
            assert frames[-1] <= LENGTHS[int(rid.split("_")[1])]
            a, _, y = frame_content(int(rid.split("_")[1]), int(frames[0]))
            np.testing.assert_array_equal(b["audio"][j, 0].numpy(), a)
            starts.setdefault(rid, set()).add(int(frames[0]) % SEQ)
    assert set(starts) <= {"train_0", "train_1", "train_2"}  # train_3 is shorter than a window
    assert len(starts["train_1"]) > 1  # random offsets: windows begin at different phases


def test_modalities_and_labels_are_decoded_only_when_asked(shards):
    b = next(iter(reader.make_dataset(shards, *cfg(modalities=("audio",), label_names=()), training=False)))
    assert set(b) == {"audio", "mask", "frame", "recording_id"}
    b = next(iter(reader.make_dataset(shards, *cfg(modalities=("face",)), training=True, seed=0)))
    assert set(b) == {"face", "face_found", "labels", "mask", "frame", "recording_id"}
    assert b["face_found"].dtype == tf.int32


def test_unlabelled_records_fail_when_labels_are_asked(tmp_path):
    write_shards(tmp_path, [3], partition="test", labelled=False)
    pattern = str(tmp_path / "test-*.tfrecord")
    b = next(iter(reader.make_dataset(pattern, *cfg(label_names=()), training=False)))
    assert "labels" not in b
    with pytest.raises(tf.errors.InvalidArgumentError, match="label/arousal"):
        next(iter(reader.make_dataset(pattern, *cfg(), training=False)))


@pytest.mark.parametrize("damage", ["truncate", "flip", "drop_tail_records"])
def test_damaged_shard_fails_naming_the_file(tmp_path, damage):
    paths = write_shards(tmp_path, [6, 9])
    data = open(paths[1], "rb").read()
    if damage == "truncate":
        data = data[:-37]
    elif damage == "flip":
        data = bytearray(data)
        data[len(data) // 2] ^= 0xFF
        data = bytes(data)
    else:  # cut at a record boundary: no TF error at all, only our frame count sees it
        records = list(tf.data.TFRecordDataset(paths[1]).as_numpy_iterator())
        with tf.io.TFRecordWriter(paths[1]) as w:
            for r in records[:5]:
                w.write(r)
        data = open(paths[1], "rb").read()
    open(paths[1], "wb").write(data)
    for training in (False, True):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"train-00001-of-00002\.tfrecord.*truncated or corrupt"):
            for _ in reader.make_dataset(str(tmp_path / "*.tfrecord"), *cfg(), training=training, seed=1):
                pass


def test_two_recordings_in_one_file_are_refused(tmp_path):
    a, b = write_shards(tmp_path, [3, 3])
    with open(a, "ab") as f:
        f.write(open(b, "rb").read())
    os.remove(b)
    with pytest.raises(tf.errors.InvalidArgumentError, match="does not hold consecutive frames of one recording"):
        list(reader.make_dataset(a, *cfg(), training=False))


def test_no_matching_files():
    with pytest.raises(DataError, match="no TFRecord files match"):
        reader.make_dataset("/nonexistent/dev-*.tfrecord", *cfg(), training=False)


def leave_killed_run_leftovers(directory, shard):
    """What killed conversions leave beside the shards: hidden partial files and folders."""
    partial = open(shard, "rb").read()[:-50]
    hidden = os.path.join(str(directory), ".tmp-" + os.path.basename(shard))  # an older converter's temp name
    with open(hidden, "wb") as f:
        f.write(partial)
    for folder in (".incomplete", ".backup"):
        os.makedirs(os.path.join(str(directory), folder))
        with open(os.path.join(str(directory), folder, os.path.basename(shard)), "wb") as f:
            f.write(partial)
    return hidden


def test_hidden_files_and_folders_are_never_listed_as_shards(tmp_path):
    paths = write_shards(tmp_path, [3, 2])
    hidden = leave_killed_run_leftovers(tmp_path, paths[0])
    assert reader.list_shards(str(tmp_path / "*.tfrecord")) == paths  # TF's glob alone matches the hidden file
    assert reader.list_shards([str(tmp_path / "train-*.tfrecord"), str(tmp_path / "*-of-*")]) == paths
    with pytest.raises(DataError, match="no TFRecord files match"):
        reader.list_shards(str(tmp_path / "*" / "*.tfrecord"))  # the hidden folders' contents
    assert reader.list_shards(str(tmp_path / ".tmp-*")) == [hidden]  # asked for by name, a hidden file is listed


def test_inspect_records_is_not_stopped_by_a_killed_runs_leftovers(tmp_path, capsys, monkeypatch):
    from emotion_e2e import inspect_records  # noqa: PLC0415

    paths = write_shards(tmp_path, [3, 2])
    leave_killed_run_leftovers(tmp_path, paths[1])
    monkeypatch.setattr(inspect_records, "_CSV", type("Unset", (), {"value": None}))  # flags are not parsed here
    inspect_records.main(["inspect_records", str(tmp_path / "*.tfrecord")])
    out = capsys.readouterr().out
    assert "train_0" in out and "train_1" in out and out.strip().endswith("2 recordings, 5 frames")


def test_input_context_shards_files_and_batches_per_replica(shards):
    seen = []
    for pipeline in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                         num_replicas_in_sync=2)
        ds = reader.make_dataset(shards, *cfg(batch_size=4), training=False, input_context=ctx)
        batches = list(ds)
        assert max(b["mask"].shape[0] for b in batches) == 2  # global 4 over 2 replicas
        seen.append({r.decode() for b in batches for r in b["recording_id"].numpy()})
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == {f"train_{k}" for k in range(4)}
    with pytest.raises(DataError, match="cannot feed 5 input pipelines"):
        reader.make_dataset(shards, *cfg(), training=False,
                            input_context=tf.distribute.InputContext(5, 0, 5))


def test_augmentation_eagerly_and_inside_tf_data_agree():
    faces = tf.random.stateless_uniform([3, FACE, FACE, 3], seed=[1, 2])
    aug = AugmentConfig(resize=20)
    seed = tf.constant([7, 8], tf.int64)
    eager = reader.augment_faces(faces, aug, seed)
    graph = next(iter(tf.data.Dataset.from_tensors((faces, seed)).map(
        lambda f, s: reader.augment_faces(f, aug, s))))
    np.testing.assert_allclose(eager.numpy(), graph.numpy(), atol=1e-6)
    assert eager.shape == faces.shape and 0 <= eager.numpy().min() and eager.numpy().max() <= 1
    assert np.abs(eager.numpy() - faces.numpy()).mean() > 1e-3  # it does change the faces
    other = reader.augment_faces(faces, aug, tf.constant([9, 9], tf.int64))
    assert not np.allclose(eager.numpy(), other.numpy())


def one_face_repeated(n):
    """A window of ``n`` copies of one random face: any difference after augmentation is a draw."""
    face = tf.random.stateless_uniform([1, FACE, FACE, 3], seed=[3, 4])
    return tf.repeat(face, n, axis=0)


def test_augmentation_draws_per_frame_or_per_window():
    faces, seed = one_face_repeated(6), tf.constant([7, 8], tf.int64)
    per_frame = reader.augment_faces(faces, AugmentConfig(resize=20), seed).numpy()
    assert AugmentConfig().per == "frame"
    for i in range(6):
        for j in range(i):
            assert np.abs(per_frame[i] - per_frame[j]).mean() > 1e-3, (i, j)
    per_window = reader.augment_faces(faces, AugmentConfig(resize=20, per="window"), seed).numpy()
    assert all(np.array_equal(per_window[0], f) for f in per_window[1:])
    assert np.abs(per_window[0] - faces[0].numpy()).mean() > 1e-3
    again = reader.augment_faces(faces, AugmentConfig(resize=20), seed).numpy()
    np.testing.assert_array_equal(per_frame, again)  # a seed fixes every draw


def test_each_augmentation_step_matches_tf_image():
    faces = one_face_repeated(4)
    resized = tf.image.resize(faces[:1], [20, 20])[0].numpy()
    # The crop: every frame is an exact 16×16 cut of the resized face.
    crops = reader.augment_faces(faces, AugmentConfig(resize=20, saturation_lower=1, saturation_upper=1,
                                                      brightness_delta=0), tf.constant([1, 2], tf.int64)).numpy()
    cuts = {(y, x): resized[y:y + FACE, x:x + FACE] for y in range(5) for x in range(5)}
    found = [[k for k, c in cuts.items() if np.allclose(c, f, atol=1e-6)] for f in crops]
    assert all(len(k) == 1 for k in found) and len({k[0] for k in found}) > 1, found
    # Saturation: tf.image.adjust_saturation with one factor for the frame.
    sat = reader.augment_faces(faces, AugmentConfig(resize=FACE, saturation_lower=1.7, saturation_upper=1.7,
                                                    brightness_delta=0), tf.constant([1, 2], tf.int64)).numpy()
    expected = np.clip(tf.image.adjust_saturation(faces[0], 1.7).numpy(), 0, 1)
    np.testing.assert_allclose(sat[0], expected, atol=1e-5)
    # Brightness: one offset per frame within ±delta (where nothing is clipped).
    bright = reader.augment_faces(faces, AugmentConfig(resize=FACE, saturation_lower=1, saturation_upper=1,
                                                       brightness_delta=0.1), tf.constant([1, 2], tf.int64)).numpy()
    inside = (bright > 0) & (bright < 1)
    deltas = [np.unique(np.round((b - faces[0].numpy())[m], 5)) for b, m in zip(bright, inside)]
    assert all(d.size == 1 and abs(d[0]) <= 0.1 for d in deltas) and len({float(d[0]) for d in deltas}) == 4


def test_training_faces_are_the_same_for_the_same_seed(tmp_path):
    """One recording, so the windows and their draws pair up the same way in every run (the
    parallel map may reorder a batch: windows are compared by their first frame)."""
    write_shards(tmp_path, [30])
    c = cfg(modalities=("face",), augment=AugmentConfig(resize=20), batch_size=4)

    def run(seed):
        b = next(iter(reader.make_dataset(str(tmp_path / "train-*.tfrecord"), *c, training=True, seed=seed,
                                          repeat=True)))
        return {int(f[0]): w for f, w in zip(b["frame"].numpy(), b["face"].numpy())}

    a, again, other = run(5), run(5), run(6)
    assert a.keys() == again.keys() and all(np.array_equal(a[k], again[k]) for k in a)
    assert any(not np.array_equal(a[k], other[k]) for k in a.keys() & other.keys()) or a.keys() != other.keys()


def test_parse_window_eagerly_and_inside_tf_data_agree(shards):
    path = sorted(tf.io.gfile.glob(shards))[0]
    serialized = next(iter(tf.data.TFRecordDataset(path).batch(5)))
    eager = reader.parse_window(serialized, cfg()[0])
    graph = next(iter(tf.data.TFRecordDataset(path).batch(5).map(lambda s: reader.parse_window(s, cfg()[0]))))
    assert eager.keys() == graph.keys()
    for k in eager:
        np.testing.assert_array_equal(eager[k].numpy(), graph[k].numpy())
    assert eager["frame"].numpy().tolist() == [1, 2, 3, 4, 5] and eager["labels"].shape == (5, 2)


def test_training_faces_are_augmented_and_eval_faces_are_not(shards):
    c = cfg(modalities=("face",), augment=AugmentConfig(resize=20))
    b = next(iter(reader.make_dataset(shards, *c, training=False)))
    _, f, _ = frame_content(0, 1)
    assert np.abs(b["face"][0, 0].numpy() * 255 - f).max() <= 3
    tb = next(iter(reader.make_dataset(shards, *c, training=True, seed=5)))
    assert tb["face"].shape == (2, SEQ, FACE, FACE, 3)


def test_no_training_window_is_an_error_not_a_hang(tmp_path):
    write_shards(tmp_path, [3, 2])  # both shorter than SEQ = 4
    ds = reader.make_dataset(str(tmp_path / "*.tfrecord"), *cfg(), training=True, seed=0, repeat=True)
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        next(iter(ds))
    error = reader.data_error(e.value)
    assert error is not None and "\n" not in str(error), str(e.value)[-500:]
    assert str(error) == (f"no training window of seq_len=4 frames can be cut: every recording of the 2 shard(s) "
                          f"matching {tmp_path / '*.tfrecord'} is shorter")


def test_a_recording_of_exactly_one_window_yields_it_every_pass(tmp_path):
    write_shards(tmp_path, [SEQ])
    ds = reader.make_dataset(str(tmp_path / "*.tfrecord"), *cfg(batch_size=1), training=True, seed=0, repeat=True)
    starts = [int(b["frame"][0, 0]) for b in ds.take(12)]
    assert starts == [1] * 12


def test_a_damaged_shard_becomes_one_line_naming_file_and_frame(tmp_path):
    paths = write_shards(tmp_path, [6, 9])
    records = list(tf.data.TFRecordDataset(paths[1]).as_numpy_iterator())
    with tf.io.TFRecordWriter(paths[1]) as w:
        for r in records[:5]:
            w.write(r)
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        list(reader.make_dataset(str(tmp_path / "*.tfrecord"), *cfg(), training=False))
    assert str(reader.data_error(e.value)) == (f"TFRecord file {paths[1]} is truncated or corrupt: its frames end at "
                                               f"5 but the recording has 9 frames")
    assert reader.data_error(tf.errors.InvalidArgumentError(None, None, "some other failure")) is None


def test_hidden_files_are_not_shards(tmp_path):
    write_shards(tmp_path, [3])
    (tmp_path / ".tmp-train-00001-of-00002.tfrecord").write_bytes(b"left by a killed conversion")
    assert [os.path.basename(p) for p in reader.list_shards(str(tmp_path / "*.tfrecord"))] == [
        "train-00000-of-00001.tfrecord"]


def test_inspect_records_names_the_file_recording_and_frame_of_non_finite_audio(tmp_path):
    from emotion_e2e import inspect_records  # noqa: PLC0415
    from emotion_e2e.data import schema  # noqa: PLC0415

    path = str(tmp_path / "train-00000-of-00001.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for i in range(1, 6):
            audio = np.full(SPF, np.nan if i in (3, 5) else 0.1, np.float32)
            w.write(schema.encode_frame(recording_id="rec_1", partition="train", frame=i, num_frames=5,
                                        time=0.04 * i, audio=audio))
    with pytest.raises(DataError, match=rf"^TFRecord file {path} \(recording rec_1\): frame 3 holds NaN or infinite "
                                        rf"audio samples \(2 of 5 frames do\); expected finite audio$"):
        inspect_records.read_shard(path)
