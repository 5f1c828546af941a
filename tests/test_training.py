"""train/eval end to end on tiny demo corpora: run directory, one real step per modality,
resume, warm start, eval from the run directory, config errors, NaN stop, and learning."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest

from disk_fixtures import one_line_error
from emotion_e2e import config as C
from emotion_e2e import evaluation, training
from emotion_e2e import run_dir as run_lib
from emotion_e2e.data import convert, demo, metadata, reader, sources
from emotion_e2e.errors import ConfigError, DataError
from emotion_e2e.models import build_model, feature_network, load_model

LABELS = ("arousal", "valence")
TINY_RNN = C.RecurrentConfig(layers=1, units=8)
FACE_NET = C.FaceNetConfig(backbone="resnet10", bn_momentum=0.9)


def train_cfg(data_dir, modalities, **kw):
    model = C.ModelConfig(recurrent=TINY_RNN, face=FACE_NET,
                          audio=C.AudioNetConfig(input_dropout=0.0, bn_momentum=0.9))
    rd = C.ReaderConfig(seq_len=4, eval_seq_len=10, batch_size=2, shuffle_buffer=8)
    base = dict(data_dir=data_dir, inputs=C.InputConfig(modalities=modalities), reader=rd, model=model, epochs=1,
                steps_per_epoch=2, optimizer=C.OptimizerConfig(learning_rate=1e-3))
    return C.TrainConfig(**{**base, **kw})


@pytest.fixture(scope="session")
def audio_run(corpus, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("runs") / "audio")
    training.train(train_cfg(corpus, ("audio",)), run)
    return run


@pytest.fixture(scope="session")
def face_run(corpus, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("runs") / "face")
    training.train(train_cfg(corpus, ("face",)), run)
    return run


@pytest.mark.parametrize("modalities", [("audio",), ("face",), ("audio", "face")])
def test_one_real_training_step_per_modality(corpus, modalities):
    cfg = train_cfg(corpus, modalities)
    model = build_model(cfg.model, cfg.inputs)
    training.compile_model(model, cfg)
    nets = {m: feature_network(model, m) for m in modalities}
    before = {m: [keras.ops.convert_to_numpy(w).copy() for w in n.trainable_weights] for m, n in nets.items()}
    ds = training.to_keras(reader.make_dataset(os.path.join(corpus, "train-*.tfrecord"), cfg.inputs, cfg.reader,
                                               training=True, repeat=True, seed=0), cfg)
    history = model.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    for m, net in nets.items():  # every feature network took part in the step
        after = [keras.ops.convert_to_numpy(w) for w in net.trainable_weights]
        assert sum(not np.array_equal(a, b) for a, b in zip(before[m], after)) > len(after) // 2, m


def test_run_directory_contents(audio_run):
    for name in ("config.json", "history.csv", "checkpoints/best.keras", "checkpoints/last.keras"):
        assert os.path.exists(os.path.join(audio_run, name)), name
    assert any(f.startswith("events") for _, _, fs in os.walk(os.path.join(audio_run, "tensorboard")) for f in fs)
    history = pd.read_csv(os.path.join(audio_run, "history.csv"))
    for col in ("loss", "arousal_ccc", "valence_ccc", "val_arousal_ccc", "val_valence_ccc", "val_ccc_mean",
                "learning_rate", "val_arousal_pcc", "val_arousal_rmse"):
        assert col in history, col
    assert history["val_ccc_mean"][0] == pytest.approx(
        (history["val_arousal_ccc"][0] + history["val_valence_ccc"][0]) / 2)
    cfg = run_lib.load_config(audio_run)
    assert cfg.inputs.modalities == ("audio",) and cfg.model.recurrent == TINY_RNN


def test_eval_from_the_run_directory_reproduces_the_in_memory_numbers(audio_run, tmp_path):
    report = evaluation.evaluate_run(audio_run, output_dir=str(tmp_path), plots=True)
    cfg = run_lib.load_config(audio_run)
    model = load_model(run_lib.checkpoint_path(audio_run))
    # in memory: the whole dev partition predicted with plain model calls, scored with NumPy
    dev = os.path.join(cfg.data_dir, "dev-*.tfrecord")
    preds = evaluation.predict_partition(model, dev, cfg.inputs, cfg.reader.for_evaluation(), LABELS)
    expected = evaluation.partition_report(preds, LABELS)
    assert report["scores"]["partition"]["ccc"] == pytest.approx(expected["partition"]["ccc"], abs=1e-9)
    # and Keras' streaming validation metric of the best epoch agrees with the whole-partition CCC:
    # validation and eval.py both cut windows of --eval_seq_len (10), not the training --seq_len (4)
    assert (cfg.reader.seq_len, cfg.reader.eval_seq_len, report["eval_seq_len"]) == (4, 10, 10)
    history = pd.read_csv(os.path.join(audio_run, "history.csv"))
    best = history.loc[history["val_ccc_mean"].idxmax()]
    assert report["scores"]["partition"]["ccc"]["arousal"] == pytest.approx(best["val_arousal_ccc"], abs=1e-4)
    short = evaluation.evaluate_run(audio_run, output_dir=str(tmp_path / "short"), plots=False, eval_seq_len=4)
    assert short["eval_seq_len"] == 4
    assert abs(short["scores"]["partition"]["ccc"]["arousal"] - best["val_arousal_ccc"]) > 1e-3
    assert sorted(os.listdir(tmp_path / "predictions")) == ["dev_000.csv", "dev_001.csv"]
    assert sorted(os.listdir(tmp_path / "plots")) == ["dev_000.png", "dev_001.png"]
    table = pd.read_csv(tmp_path / "predictions" / "dev_000.csv")
    assert list(table.columns) == ["time", "pred_arousal", "gold_arousal", "pred_valence", "gold_valence"]
    assert len(table) == 50 and table["time"].iloc[0] == pytest.approx(0.04)
    np.testing.assert_allclose(table["pred_arousal"], preds["dev_000"].pred[:, 0], atol=1e-5)


def test_resume_continues_from_the_saved_step(corpus, tmp_path):
    run = str(tmp_path / "run")
    cfg = train_cfg(corpus, ("audio",), steps_per_epoch=3)
    training.train(cfg, run)
    first = load_model(run_lib.checkpoint_path(run, "last"), compile=True)
    assert int(first.optimizer.iterations.numpy()) == 3
    history = training.train(dataclasses.replace(cfg, epochs=2), run)  # the same command, one more epoch
    assert history.epoch == [1]  # epoch 0 was not trained again
    last = load_model(run_lib.checkpoint_path(run, "last"), compile=True)
    assert int(last.optimizer.iterations.numpy()) == 6
    assert list(pd.read_csv(os.path.join(run, "history.csv"))["epoch"]) == [0, 1]
    assert training.train(dataclasses.replace(cfg, epochs=2), run).epoch == []  # finished: nothing to do


def test_warm_start_really_loads_the_unimodal_feature_networks(corpus, audio_run, face_run):
    cfg = train_cfg(corpus, ("audio", "face"), init_from=(audio_run, face_run))
    training.check_config(cfg, "/nonexistent-run", metadata.read(corpus))
    model = build_model(cfg.model, cfg.inputs)
    copied = training.warm_start(model, cfg)
    assert copied[audio_run] > 0 and copied[face_run] > 0
    for run, modality in ((audio_run, "audio"), (face_run, "face")):
        src = feature_network(load_model(run_lib.checkpoint_path(run)), modality)
        dst = feature_network(model, modality)
        assert len(src.weights) == len(dst.weights) == copied[run]
        for a, b in zip(src.weights, dst.weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(corpus, tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    cfg = train_cfg(corpus, ("audio",))
    training.train(cfg, run)
    ckpts = {w: open(run_lib.checkpoint_path(run, w), "rb").read() for w in ("best", "last")}
    to_keras = training.to_keras

    def poisoned(ds, c):
        return to_keras(ds, c).map(lambda x, y, w: (x, {k: v * np.nan for k, v in y.items()}, w))

    monkeypatch.setattr(training, "to_keras", poisoned)
    with pytest.raises(FloatingPointError, match=r"loss is nan at epoch 2, batch 1 \(optimizer step 3\)"):
        training.train(dataclasses.replace(cfg, epochs=2), run)
    for w, data in ckpts.items():
        assert open(run_lib.checkpoint_path(run, w), "rb").read() == data


def run_cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def audio_only_corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tiny_demo_audio"))
    cfg = demo.DemoConfig(num_train=2, num_dev=1, seconds=1)
    convert.convert(sources.demo_recordings(cfg), convert.ConvertConfig(modalities=("audio",)), out)
    return out


def test_contradictory_flags_stop_before_any_graph_is_built(corpus, audio_only_corpus, audio_run, tmp_path):
    cases = [
        ([f"--data_dir={audio_only_corpus}", "--modalities=face"], "--modalities=face but .* holds audio only"),
        ([f"--data_dir={corpus}", "--modalities=face", f"--init_from={audio_run}"],
         f"--init_from={audio_run} was trained on audio; expected a unimodal run of one of \\['face'\\]"),
        ([f"--data_dir={corpus}", "--modalities=audio,face", f"--init_from={tmp_path / 'missing'}"],
         "is not a run directory: config.json not found"),
        ([f"--data_dir={tmp_path / 'nothing'}"], "metadata.json not found"),
        ([f"--data_dir={corpus}", "--label_names=dominance"], "--label_names=dominance but .* has labels"),
        ([f"--data_dir={corpus}", "--face_net=resnet18", "--face_weights=imagenet"],
         "ImageNet weights exist for resnet50_keras .* only"),
        # no window can be cut: refused before training, never a hang at "Epoch 1"
        ([f"--data_dir={corpus}", "--seq_len=200"],
         "--seq_len=200 but no recording of partition 'train' in .* is that long \\(the longest has 50 frames\\)"),
    ]
    for flags, message in cases:
        r = run_cli("train.py", f"--run_dir={tmp_path / 'r'}", "--seq_len=4", *flags)
        assert r.returncode == 1, (flags, r.stderr[-2000:])
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and re.search(message, last), (flags, last)
        assert not os.path.exists(tmp_path / "r" / "checkpoints")
    r = run_cli("eval.py", f"--run_dir={tmp_path / 'missing'}")
    assert r.returncode == 1 and "is not a run directory" in r.stderr


def test_a_run_dir_that_is_a_file_or_under_one_is_one_line_before_any_graph(corpus, tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("not a folder")
    for run_dir, message in ((f, f"run directory {f} is a file, not a directory"),
                             (f / "run", f"cannot create run directory {f / 'run'}: {f} is a file, not a directory")):
        r = run_cli("train.py", f"--data_dir={corpus}", f"--run_dir={run_dir}", "--modalities=audio", "--seq_len=4")
        assert one_line_error(r) == f"error: {message}"
    assert os.listdir(tmp_path) == ["notes.txt"] and f.read_text() == "not a folder"


@dataclasses.dataclass(frozen=True)
class ShuffledDemo(sources.DemoSourceRecording):
    """A demo recording whose label track is permuted in time: labels no longer match the audio."""

    def open(self, cfg):
        n, names, frames = super().open(cfg)
        order = np.random.default_rng(7).permutation(n)
        frames = list(frames)
        return n, names, (convert.Frame(f.audio, f.face_jpeg, f.face_found, frames[order[i]].labels)
                          for i, f in enumerate(frames))


def test_audio_model_learns_arousal_and_shuffled_labels_do_not(tmp_path):
    dcfg = demo.DemoConfig(num_train=6, num_dev=2, seconds=6)
    conv = convert.ConvertConfig(modalities=("audio",))
    real, shuffled = str(tmp_path / "real"), str(tmp_path / "shuffled")
    recs = sources.demo_recordings(dcfg)
    convert.convert(recs, conv, real)
    convert.convert([ShuffledDemo(r.recording_id, r.partition, config=r.config, spec=r.spec)
                     if r.partition == "train" else r for r in recs], conv, shuffled)
    scores = {}
    for name, data in (("real", real), ("shuffled", shuffled)):
        cfg = train_cfg(data, ("audio",), steps_per_epoch=200, epochs=1,
                        # evaluated on the 4-frame windows it trains on: an LSTM that never saw more than
                        # 4 steps is not expected to hold on 150-frame windows (measured: 0.15 there)
                        reader=C.ReaderConfig(seq_len=4, eval_seq_len=4, batch_size=16))
        training.train(cfg, str(tmp_path / f"run_{name}"))
        report = evaluation.evaluate_run(str(tmp_path / f"run_{name}"), plots=False)
        scores[name] = report["scores"]["partition"]["ccc"]["arousal"]
    print("dev arousal CCC", scores)
    # Input pipelines run in parallel, so runs differ: measured real 0.54-0.85, shuffled -0.01-0.14.
    assert scores["real"] > 0.4, scores
    assert scores["real"] - scores["shuffled"] > 0.3, scores


@pytest.fixture
def float32_after():
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("options", [dict(strategy="mirrored", mixed_precision="bf16"),
                                     dict(jit_compile=True)])
def test_strategy_precision_and_xla_options_train(corpus, tmp_path, options, float32_after):
    cfg = train_cfg(corpus, ("audio",), **options)
    history = training.train(cfg, str(tmp_path / "run"))
    assert np.isfinite(history.history["loss"]).all() and np.isfinite(history.history["val_ccc_mean"]).all()
    model = load_model(run_lib.checkpoint_path(str(tmp_path / "run")))
    out = model({"audio": np.zeros((1, 3, 640), np.float32)})
    assert out["arousal"].dtype == "float32"  # the head stays float32 under mixed precision


@pytest.fixture
def corpus_copy(corpus, tmp_path):
    """A private copy of the tiny corpus that a test may damage."""
    import shutil  # noqa: PLC0415

    return shutil.copytree(corpus, tmp_path / "data")


def cut_shard(path, keep):
    """Rewrites a shard with its first ``keep`` records only: no TF error, only the frame count shows it."""
    import tensorflow as tf  # noqa: PLC0415

    records = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
    with tf.io.TFRecordWriter(str(path)) as w:
        for r in records[:keep]:
            w.write(r)


@pytest.mark.parametrize("partition", ["train", "dev"])
def test_a_cut_shard_stops_training_with_one_line_naming_shard_and_frame(corpus_copy, tmp_path, partition):
    shard = corpus_copy / f"{partition}-00001-of-0000{4 if partition == 'train' else 2}.tfrecord"
    cut_shard(shard, 30)
    r = run_cli("train.py", f"--data_dir={corpus_copy}", f"--run_dir={tmp_path / 'r'}", "--modalities=audio",
                "--seq_len=4", "--batch_size=2", "--steps_per_epoch=40", "--epochs=1", "--lstm_layers=1",
                "--lstm_units=4")
    assert one_line_error(r) == (f"error: TFRecord file {shard} is truncated or corrupt: its frames end at 30 "
                                 f"but the recording has 50 frames")


def test_eval_of_a_cut_shard_and_a_truncated_checkpoint_are_one_line(audio_run, corpus, tmp_path):
    import shutil  # noqa: PLC0415

    run = shutil.copytree(audio_run, tmp_path / "run")
    data = shutil.copytree(corpus, tmp_path / "data")
    cfg = dataclasses.replace(run_lib.load_config(run), data_dir=str(data))
    run_lib.save_config(run, cfg)
    cut_shard(data / "dev-00000-of-00002.tfrecord", 7)
    line = one_line_error(run_cli("eval.py", f"--run_dir={run}"))
    assert line == (f"error: TFRecord file {data / 'dev-00000-of-00002.tfrecord'} is truncated or corrupt: its frames "
                    f"end at 7 but the recording has 50 frames")
    best = run_lib.checkpoint_path(run)
    with open(best, "r+b") as f:
        f.truncate(os.path.getsize(best) // 2)
    line = one_line_error(run_cli("eval.py", f"--run_dir={run}", "--partition=train"))
    assert line.startswith(f"error: {best} is not a readable .keras model (truncated or corrupt?)"), line


@dataclasses.dataclass(frozen=True)
class ConstantDemo(sources.DemoSourceRecording):
    """A demo recording whose arousal never moves."""

    def open(self, cfg):
        n, names, frames = super().open(cfg)
        return n, names, (f._replace(labels=np.array([0.25, f.labels[1]], np.float32)) for f in frames)


def test_constant_labels_are_refused_naming_partition_and_recordings(tmp_path):
    recs = [ConstantDemo(r.recording_id, r.partition, config=r.config, spec=r.spec)
            for r in sources.demo_recordings(demo.DemoConfig(num_train=2, num_dev=1, seconds=1))]
    data = str(tmp_path / "data")
    convert.convert(recs, convert.ConvertConfig(modalities=("audio",)), data)
    with pytest.raises(ConfigError, match=r"the arousal labels of partition 'train' in .* are constant \(standard deviation 0 "
                             r"over recordings train_000, train_001\)"):
        training.train(train_cfg(data, ("audio",)), str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")
    # valence alone moves: that run is fine to check
    training.check_config(train_cfg(data, ("audio",), inputs=C.InputConfig(modalities=("audio",),
                                                                         label_names=("valence",))),
                          str(tmp_path / "run"), metadata.read(data))


def test_report_json_is_strict_and_tables_show_undefined_scores():
    report = {"partition": evaluation.scores(np.zeros((5, 1)), np.zeros((5, 1)), ("arousal",)), "recordings": {}}
    assert np.isnan(report["partition"]["ccc"]["arousal"])  # 0/0: undefined
    text = json.dumps(run_lib.strict_json(report), allow_nan=False)
    assert json.loads(text)["partition"]["ccc"]["arousal"] is None
    table = evaluation.format_table(json.loads(text), ("arousal",), "dev")
    assert "partition CCC" in table and table.splitlines()[2].split()[2] == "-"


@pytest.mark.parametrize("damage", ["understated", "overstated", "missing_shard"])
def test_metadata_that_disagrees_with_the_shards_stops_training_in_one_line(corpus_copy, tmp_path, damage):
    path = corpus_copy / metadata.FILENAME
    meta = json.loads(path.read_text())
    dev = next(r for r in meta["recordings"] if r["partition"] == "dev")
    shard = corpus_copy / dev["shard"]
    if damage == "missing_shard":
        shard.unlink()
        expected = f"{shard} (recording {dev['recording_id']}, partition dev) is listed in {path} but does not exist"
    else:
        dev["num_frames"] += -10 if damage == "understated" else 10
        path.write_text(json.dumps(meta))
        expected = f"{shard}: num_frames 50 in its first record, {dev['num_frames']} in {path}"
    r = run_cli("train.py", f"--data_dir={corpus_copy}", f"--run_dir={tmp_path / 'r'}", "--modalities=audio",
                "--seq_len=4")
    assert one_line_error(r).startswith(f"error: {expected}")
    assert not os.path.exists(tmp_path / "r")


def test_stateful_evaluation_equals_predicting_each_recording_whole(audio_run, tmp_path):
    cfg = run_lib.load_config(audio_run)
    model = load_model(run_lib.checkpoint_path(audio_run))
    pattern, rcfg = os.path.join(cfg.data_dir, "dev-*.tfrecord"), cfg.reader.for_evaluation()
    whole = evaluation.predict_partition(model, pattern, cfg.inputs, dataclasses.replace(rcfg, seq_len=50),
                                         LABELS)  # one window per 50-frame recording
    stateful = evaluation.predict_partition(model, pattern, cfg.inputs, rcfg, LABELS, stateful=True)
    windowed = evaluation.predict_partition(model, pattern, cfg.inputs, rcfg, LABELS)
    assert sorted(stateful) == sorted(whole) == ["dev_000", "dev_001"]
    for rid in whole:
        assert stateful[rid].pred.shape == whole[rid].pred.shape == (50, 2)
        np.testing.assert_allclose(stateful[rid].pred, whole[rid].pred, atol=1e-5)
        assert np.abs(windowed[rid].pred - whole[rid].pred).max() > 1e-4  # restarting every window differs
    report = evaluation.evaluate_run(audio_run, output_dir=str(tmp_path), plots=False, stateful=True)
    assert report["stateful"] is True
    assert report["scores"]["partition"]["ccc"] == pytest.approx(
        evaluation.partition_report(stateful, LABELS)["partition"]["ccc"], abs=1e-9)


def files_under(d):
    return sorted(os.path.relpath(os.path.join(root, n), d) for root, _, names in os.walk(d) for n in names)


def test_eval_refuses_a_hostile_recording_id_in_metadata_or_records_and_writes_nothing(audio_run, corpus, tmp_path):
    import shutil  # noqa: PLC0415

    import tensorflow as tf  # noqa: PLC0415

    run = shutil.copytree(audio_run, tmp_path / "a" / "b" / "run")
    data = shutil.copytree(corpus, tmp_path / "a" / "b" / "data")
    run_lib.save_config(run, dataclasses.replace(run_lib.load_config(run), data_dir=str(data)))
    meta_path = data / metadata.FILENAME
    original = meta_path.read_text()
    meta = json.loads(original)
    k = next(k for k, e in enumerate(meta["recordings"]) if e["partition"] == "dev")
    meta["recordings"][k]["recording_id"] = "../../../../../EVIL"
    meta_path.write_text(json.dumps(meta))
    before = files_under(tmp_path)
    line = one_line_error(run_cli("eval.py", f"--run_dir={run}"))
    assert line.startswith(f"error: {meta_path}, recordings[{k}]: recording id '../../../../../EVIL' is not allowed: "
                           f"expected 1 to 128 of letters, digits"), line
    assert files_under(tmp_path) == before
    # records whose id would leave the folder: refused before anything is written
    meta_path.write_text(original)
    shard = data / meta["recordings"][k]["shard"]
    records = list(tf.data.TFRecordDataset(str(shard)).as_numpy_iterator())
    with tf.io.TFRecordWriter(str(shard)) as w:
        for r in records:
            example = tf.train.Example.FromString(r)
            example.features.feature["recording_id"].bytes_list.value[0] = b"../../EVIL"
            w.write(example.SerializeToString())
    cfg = run_lib.load_config(run)
    with pytest.raises(DataError, match=rf"TFRecord files {shard}: recording id '\.\./\.\./EVIL' is not allowed"):
        evaluation.predict_partition(run_lib.load_checkpoint(run), str(shard), cfg.inputs,
                                     cfg.reader.for_evaluation(), cfg.inputs.label_names)
    preds = {"../../EVIL": evaluation.Predictions(np.arange(1, 3), np.zeros((2, 2)), None)}
    out = tmp_path / "a" / "b" / "out"
    for write in (evaluation.write_predictions, evaluation.plot_predictions):
        with pytest.raises(DataError, match=rf"'\.\./\.\./EVIL\.(csv|png)' is not a file name inside {out}"):
            write(preds, LABELS, 0.04, str(out))
    assert not out.exists() and not (tmp_path / "EVIL.csv").exists() and not (tmp_path / "a" / "EVIL.png").exists()
