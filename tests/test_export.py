"""The exported SavedModel is a tested interface: TF's own tools read its contract, a fresh process
without emotion_e2e reproduces the Keras model, TF Serving's request format and warm-up file run
through it, a stream followed chunk by chunk equals the whole sequence, and a version appears
whole or not at all."""

import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from disk_fixtures import one_line_error
from emotion_e2e import config as C
from emotion_e2e import export, training
from emotion_e2e import run_dir as run_lib
from emotion_e2e.errors import ConfigError
from emotion_e2e.models import build_model, optimize_for_inference
from emotion_e2e.models.inference import with_recurrent_state

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-5  # fp32 rounding: folded batch norms and the hoisted LSTM projection reorder sums
UNITS = 8
FACE_SIZE = 96  # what the demo converter writes
SPF = 640
MODALITIES = {"audio": ("audio",), "face": ("face",), "multimodal": ("audio", "face")}
# Runs trained on the tiny corpus: the three modality combinations, Keras' standard LSTM, no LSTM.
RUNS = {**MODALITIES, "standard": ("audio",), "no_lstm": ("audio",)}


def train_cfg(data_dir, name):
    rnn = C.RecurrentConfig(layers=0 if name == "no_lstm" else 1, units=UNITS,
                            cell="standard" if name == "standard" else "peephole")
    model = C.ModelConfig(recurrent=rnn, face=C.FaceNetConfig(backbone="resnet10", bn_momentum=0.9),
                          audio=C.AudioNetConfig(input_dropout=0.0, bn_momentum=0.9))
    return C.TrainConfig(data_dir=data_dir, inputs=C.InputConfig(modalities=RUNS[name]), model=model,
                         reader=C.ReaderConfig(seq_len=4, batch_size=2, shuffle_buffer=8), epochs=1,
                         steps_per_epoch=2, optimizer=C.OptimizerConfig(learning_rate=1e-3))


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    """``run(name)``: the directory of a tiny trained run (trained on first use)."""
    runs = {}

    def get(name):
        if name not in runs:
            runs[name] = str(tmp_path_factory.mktemp("runs") / name)
            training.train(train_cfg(corpus, name), runs[name], verbose=0)
        return runs[name]

    return get


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """``exported(name)``: ``(run_dir, version_dir)`` of the run's export (exported on first use)."""
    exports = {}

    def get(name):
        if name not in exports:
            exports[name] = export.export_run(run(name), str(tmp_path_factory.mktemp("exports") / name))
        return run(name), exports[name]

    return get


@pytest.fixture(scope="module")
def loaded():
    """``loaded(version_dir)``: the SavedModel, loaded once per test module."""
    models = {}

    def get(path):
        if path not in models:
            models[path] = tf.saved_model.load(path)
        return models[path]

    return get


def sample(modalities, b=2, t=5, seed=0):
    """Inputs as a client sends them: audio float32 in ±0.5, faces uint8 RGB."""
    rng = np.random.default_rng(seed)
    x = {}
    if "audio" in modalities:
        x["audio"] = rng.uniform(-0.5, 0.5, (b, t, SPF)).astype(np.float32)
    if "face" in modalities:
        x["face"] = rng.integers(0, 256, (b, t, FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    return x


def keras_outputs(run_dir, x):
    """The run's Keras model (the checkpoint, not optimized) on ``x``, faces fed as float32 / 255."""
    model = run_lib.load_checkpoint(run_dir)
    feed = {k: v.astype(np.float32) / 255.0 if k == "face" else v for k, v in x.items()}
    return {k: np.asarray(v) for k, v in model(feed, training=False).items()}


def call(signature, x):
    return {k: v.numpy() for k, v in signature(**{k: tf.constant(v) for k, v in x.items()}).items()}


def assert_close(got, want, names, msg=""):
    for name in names:
        assert got[name].shape == want[name].shape, (msg, name)
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=TOLERANCE, err_msg=f"{msg} {name}")


def tool(*args, **kwargs):
    """``python ARGS`` with this venv's interpreter (TF's command-line tools, the export CLI);
    ``cwd`` decides whether the repository's package is importable."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, **kwargs)


def signature_block(show: str, name: str) -> str:
    """The part of ``saved_model_cli show --all`` that describes signature ``name``."""
    match = re.search(rf"signature_def\['{name}'\]:\n(.*?)Method name is: (\S+)", show, re.S)
    assert match, f"no signature {name!r} in:\n{show}"
    assert match.group(2) == "tensorflow/serving/predict"
    return match.group(1)


def tensor_info(block: str) -> dict:
    """``{('inputs' | 'outputs', name): (dtype, shape)}`` of one signature's block."""
    found = re.findall(r"(inputs|outputs)\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: \(([-\d, ]*)\)", block)
    return {(kind, name): (dtype, shape) for kind, name, dtype, shape in found}


def test_saved_model_cli_shows_the_contract(exported):
    _, path = exported("multimodal")
    r = tool("-m", "tensorflow.python.tools.saved_model_cli", "show", "--all", "--dir", path, cwd=path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "MetaGraphDef with tag-set: 'serve' contains the following SignatureDefs" in r.stdout
    audio, face = ("DT_FLOAT", f"-1, -1, {SPF}"), ("DT_UINT8", f"-1, -1, {FACE_SIZE}, {FACE_SIZE}, 3")
    labels = {("outputs", n): ("DT_FLOAT", "-1, -1") for n in ("arousal", "valence")}
    state = {(kind, n): ("DT_FLOAT", f"-1, {UNITS}") for kind in ("inputs", "outputs") for n in ("h_1", "c_1")}
    assert tensor_info(signature_block(r.stdout, "serving_default")) == {
        ("inputs", "audio"): audio, ("inputs", "face"): face, **labels}
    assert tensor_info(signature_block(r.stdout, "stream")) == {
        ("inputs", "audio"): audio, ("inputs", "face"): face, **labels, **state}


def test_unimodal_and_lstm_less_exports_have_only_their_inputs(exported, loaded):
    for name, inputs in (("audio", {"audio"}), ("face", {"face"}), ("no_lstm", {"audio"})):
        model = loaded(exported(name)[1])
        for signature in export.SIGNATURES:
            _, spec = model.signatures[signature].structured_input_signature
            state = set() if name == "no_lstm" or signature == "serving_default" else {"h_1", "c_1"}
            assert set(spec) == inputs | state, (name, signature)


def test_saved_model_cli_run_gives_the_keras_numbers(exported, tmp_path):
    run_dir, path = exported("multimodal")
    x = sample(("audio", "face"), b=1, t=3)
    np.save(tmp_path / "face.npy", x["face"])
    audio = json.dumps(x["audio"].tolist())  # --input_exprs takes Python literals only
    r = tool("-m", "tensorflow.python.tools.saved_model_cli", "run", "--dir", path, "--tag_set", "serve",
             "--signature_def", "serving_default", "--input_exprs", f"audio={audio}",
             "--inputs", f"face={tmp_path / 'face.npy'}", "--outdir", str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    got = {n: np.load(tmp_path / "out" / f"{n}.npy") for n in ("arousal", "valence")}
    assert_close(got, keras_outputs(run_dir, x), got, "saved_model_cli run")


FRESH_PROCESS = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf

    for path, inputs, outputs in zip(*[iter(sys.argv[1:])] * 3):
        model = tf.saved_model.load(path)
        x = dict(np.load(inputs))
        y = model.signatures["serving_default"](**{k: tf.constant(v) for k, v in x.items()})
        np.savez(outputs, **{k: v.numpy() for k, v in y.items()})
    assert "emotion_e2e" not in sys.modules, "the SavedModel needed the package"
    print("emotion_e2e imported:", "emotion_e2e" in sys.modules)
""")


def test_a_fresh_process_without_the_package_reproduces_the_keras_model(exported, tmp_path):
    args, want = [], {}
    for name, modalities in MODALITIES.items():
        run_dir, path = exported(name)
        x = sample(modalities, seed=len(name))
        np.savez(tmp_path / f"{name}_in.npz", **x)
        args += [path, str(tmp_path / f"{name}_in.npz"), str(tmp_path / f"{name}_out.npz")]
        want[name] = keras_outputs(run_dir, x)
    script = tmp_path / "fresh.py"
    script.write_text(FRESH_PROCESS)
    r = tool(str(script), *args, cwd=tmp_path)  # not the repository: nothing to import by accident
    assert r.returncode == 0, r.stderr[-3000:]
    assert "emotion_e2e imported: False" in r.stdout
    for name in MODALITIES:
        got = dict(np.load(tmp_path / f"{name}_out.npz"))
        assert sorted(got) == ["arousal", "valence"], name
        assert_close(got, want[name], want[name], name)


def test_the_graph_is_the_optimized_one(exported):
    """No batch norm left (no moving statistics, no rsqrt), and exactly the variables of the
    optimized model with its LSTM state exposed."""
    from tensorflow.core.protobuf import saved_model_pb2  # noqa: PLC0415

    run_dir, path = exported("face")
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    graph = proto.meta_graphs[0]
    assert list(graph.meta_info_def.tags) == ["serve"]
    ops = {n.op for n in graph.graph_def.node} | {n.op for f in graph.graph_def.library.function for n in f.node_def}
    assert "Conv2D" in ops and not ops & {"Rsqrt", "FusedBatchNormV3"}, sorted(ops)
    names = [n.variable.name for n in graph.object_graph_def.nodes if n.WhichOneof("kind") == "variable"]
    assert not [n for n in names if "moving" in n], names
    fast = with_recurrent_state(optimize_for_inference(run_lib.load_checkpoint(run_dir)))
    assert len(names) == len(fast.weights)


def serve_predict(model, request_bytes: bytes):
    """What TF Serving does with a serialized PredictRequest: decode the named input tensors,
    run the named signature (default: serving_default), encode the outputs."""
    from tensorflow_serving.apis import predict_pb2  # noqa: PLC0415

    request = predict_pb2.PredictRequest.FromString(request_bytes)
    signature = model.signatures[request.model_spec.signature_name or "serving_default"]
    y = signature(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
    response = predict_pb2.PredictResponse()
    for k, v in y.items():
        response.outputs[k].CopyFrom(tf.make_tensor_proto(v.numpy()))
    return response


def test_a_predict_request_runs_through_serving_default(exported, loaded):
    from tensorflow_serving.apis import predict_pb2  # noqa: PLC0415

    run_dir, path = exported("multimodal")
    x = sample(("audio", "face"), b=1, t=4, seed=3)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "emotion"
    request.model_spec.signature_name = "serving_default"
    for k, v in x.items():
        request.inputs[k].CopyFrom(tf.make_tensor_proto(v))
    response = serve_predict(loaded(path), request.SerializeToString())
    got = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    assert_close(got, keras_outputs(run_dir, x), ("arousal", "valence"))


def readme_bodies():
    """The JSON request bodies of the README's Serving section."""
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    section = readme.split("\n## Serving", 1)[1].split("\n## ", 1)[0]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.S)]


def test_the_readme_rest_bodies_run_through_their_signatures(tmp_path, loaded):
    """The README shows its bodies for a toy audio model (4 samples per frame, one LSTM of 2
    units) so they fit on the page; that model is exported here, without its data directory."""
    bodies = readme_bodies()
    assert sorted(b["signature_name"] for b in bodies) == sorted(export.SIGNATURES)
    spf, units = len(bodies[0]["inputs"]["audio"][0][0]), 2
    cfg = C.TrainConfig(data_dir=str(tmp_path / "gone"),
                        inputs=C.InputConfig(modalities=("audio",), samples_per_frame=spf),
                        model=C.ModelConfig(recurrent=C.RecurrentConfig(layers=1, units=units)))
    run_dir = str(tmp_path / "toy")
    run_lib.save_config(run_dir, cfg)
    os.makedirs(os.path.dirname(run_lib.checkpoint_path(run_dir)))
    build_model(cfg.model, cfg.inputs).save(run_lib.checkpoint_path(run_dir))
    model = loaded(export.export_run(run_dir, str(tmp_path / "export")))
    for body in bodies:
        signature = model.signatures[body["signature_name"]]
        _, specs = signature.structured_input_signature
        assert set(body["inputs"]) == set(specs), body["signature_name"]
        # TF Serving's REST front end converts JSON numbers to each input's dtype
        y = signature(**{k: tf.constant(v, dtype=specs[k].dtype) for k, v in body["inputs"].items()})
        frames = np.shape(body["inputs"]["audio"])[:2]
        assert y["arousal"].shape == frames and np.isfinite(y["arousal"].numpy()).all()


@pytest.mark.parametrize("name", ["multimodal", "standard"])
def test_stream_in_uneven_chunks_equals_one_whole_sequence_call(exported, loaded, name):
    _, path = exported(name)
    model = loaded(path)
    x = sample(RUNS[name], b=2, t=9, seed=5)
    whole = call(model.signatures["serving_default"], x)
    state = {n: np.zeros((2, UNITS), np.float32) for n in ("h_1", "c_1")}
    chunks = []
    for start, stop in ((0, 1), (1, 5), (5, 9)):
        y = call(model.signatures["stream"], {**{k: v[:, start:stop] for k, v in x.items()}, **state})
        state = {n: y[n] for n in state}
        chunks.append(y)
    got = {n: np.concatenate([c[n] for c in chunks], axis=1) for n in ("arousal", "valence")}
    assert_close(got, whole, ("arousal", "valence"), name)
    assert not np.allclose(state["h_1"], 0)  # the state really moved


def test_stream_without_lstm_is_the_whole_sequence_signature(exported, loaded):
    _, path = exported("no_lstm")
    model = loaded(path)
    x = sample(("audio",), b=1, t=3)
    assert_close(call(model.signatures["stream"], x), call(model.signatures["serving_default"], x),
                 ("arousal", "valence"))


def test_face_input_is_uint8_scaled_inside(exported, loaded):
    run_dir, path = exported("face")
    model = loaded(path)
    _, specs = model.signatures["serving_default"].structured_input_signature
    assert specs["face"].dtype == tf.uint8
    x = sample(("face",), b=1, t=3, seed=9)
    x["face"][0, 0] = 255  # the extremes: a white frame and a black one
    x["face"][0, 1] = 0
    assert_close(call(model.signatures["serving_default"], x), keras_outputs(run_dir, x), ("arousal", "valence"))


def test_requests_without_frames_or_with_unequal_modalities_fail_saying_so(exported, loaded):
    model = loaded(exported("multimodal")[1])
    x = sample(("audio", "face"), b=1, t=3)
    cases = [({k: v[:, :0] for k, v in x.items()}, "a request needs at least one frame"),
             ({**x, "face": x["face"][:, :2]}, "face and audio must have the same batch and time sizes")]
    for request, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            call(model.signatures["serving_default"], request)


def test_warmup_requests_parse_and_run(exported, loaded):
    from tensorflow_serving.apis import prediction_log_pb2  # noqa: PLC0415

    _, path = exported("multimodal")
    records = tf.data.TFRecordDataset(os.path.join(path, "assets.extra", "tf_serving_warmup_requests"))
    logs = [prediction_log_pb2.PredictionLog.FromString(r) for r in records.as_numpy_iterator()]
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log"] * 2
    requests = [log.predict_log.request for log in logs]
    assert sorted(r.model_spec.signature_name for r in requests) == sorted(export.SIGNATURES)
    for request in requests:
        response = serve_predict(loaded(path), request.SerializeToString())
        assert {"arousal", "valence"} <= set(response.outputs), request.model_spec.signature_name


def test_the_description_asset_holds_the_time_base_face_crops_and_names(exported, corpus):
    _, path = exported("multimodal")
    with open(os.path.join(path, "assets.extra", "emotion_e2e.json")) as f:
        info = json.load(f)
    with open(os.path.join(corpus, "metadata.json")) as f:
        meta = json.load(f)
    time_base = meta["time_base"]
    assert (info["frame_step"], info["sample_rate"]) == (time_base["frame_step"], time_base["sample_rate"])
    assert info["time_base_source"] == os.path.join(corpus, "metadata.json")
    # the crops a client must cut to see faces as the model saw them in training
    assert info["face"] == meta["face"] == dataclasses.asdict(C.FaceConfig())
    assert info["face_source"] == os.path.join(corpus, "metadata.json")
    assert info["samples_per_frame"] == SPF and info["face_size"] == FACE_SIZE
    assert info["modalities"] == ["audio", "face"] and info["label_names"] == ["arousal", "valence"]
    # the scale the outputs were trained to: the training partition's gold standard
    train = meta["partitions"]["train"]["labels"]
    assert info["labels"] == {n: {k: train[n][k] for k in ("mean", "std", "min", "max")} for n in ("arousal", "valence")}
    assert info["labels_source"] == f"{os.path.join(corpus, 'metadata.json')}, partition 'train'"
    assert info["format_version"] == 3
    assert info["lstm"] == {"layers": 1, "units": UNITS, "cell": "peephole"}
    assert info["state_names"] == ["h_1", "c_1"]
    assert info["signatures"]["stream"]["inputs"]["h_1"] == {"dtype": "float32", "shape": [None, UNITS]}


def test_without_the_data_directory_the_time_base_falls_back_to_the_config(run, tmp_path, capsys):
    moved = str(tmp_path / "run")
    cfg = run_lib.load_config(run("audio"))
    os.makedirs(os.path.dirname(run_lib.checkpoint_path(moved)))
    run_lib.save_config(moved, dataclasses.replace(cfg, data_dir=str(tmp_path / "deleted")))
    with open(run_lib.checkpoint_path(run("audio")), "rb") as src, open(run_lib.checkpoint_path(moved), "wb") as dst:
        dst.write(src.read())
    path = export.export_run(moved, str(tmp_path / "export"))
    assert "metadata.json not found" in capsys.readouterr().err
    with open(os.path.join(path, "assets.extra", "emotion_e2e.json")) as f:
        info = json.load(f)
    assert (info["frame_step"], info["sample_rate"]) == (0.04, 16000)
    assert "not found" in info["time_base_source"] and "config.json" in info["time_base_source"]
    assert info["face"] == dataclasses.asdict(C.FaceConfig(size=cfg.inputs.face_size))
    assert "not found" in info["face_source"] and "FaceConfig's defaults" in info["face_source"]
    assert info["labels"] is None and "not found: the training labels' statistics are unknown" in info["labels_source"]


def test_a_face_size_other_than_the_data_crops_is_refused(run, tmp_path):
    """A face model whose config.json disagrees with metadata.json about the crop size: the data
    was converted again since, and a client would cut faces the model never saw."""
    cfg = run_lib.load_config(run("face"))
    data = tmp_path / "data"
    data.mkdir()
    with open(os.path.join(cfg.data_dir, "metadata.json")) as f:
        meta = json.load(f)
    meta["face"]["size"] = 64
    with open(data / "metadata.json", "w") as f:
        json.dump(meta, f)
    with pytest.raises(ConfigError, match="64-pixel face crops but the run was trained on 96"):
        export.face_settings(dataclasses.replace(cfg, data_dir=str(data)))


def snapshot(directory) -> dict:
    """``{relative path: sha256}`` of every file under ``directory``."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_versions_count_up_and_an_existing_one_is_never_overwritten(run, tmp_path):
    base = str(tmp_path / "models")
    first = export.export_run(run("audio"), base)
    assert first == os.path.join(base, "1")
    assert export.export_run(run("audio"), base, checkpoint="last") == os.path.join(base, "2")
    assert export.export_run(run("audio"), base, version=10) == os.path.join(base, "10")
    before = snapshot(first)
    with pytest.raises(ConfigError, match=r"1 exists: version 1 was exported already.*\(11\)"):
        export.export_run(run("audio"), base, version=1)
    assert snapshot(first) == before
    assert sorted(os.listdir(base)) == ["1", "10", "2"]
    r = tool("-m", "emotion_e2e.export", f"--run_dir={run('audio')}", f"--export_dir={base}", "--version=2", cwd=REPO)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith("error: "), r.stderr[-2000:]
    assert "version 2 was exported already" in r.stderr


def test_an_export_dir_that_is_a_file_or_under_one_is_one_line_and_nothing_is_written(run, tmp_path):
    f = tmp_path / "models"
    f.write_text("not a folder")
    for export_dir, message in ((f, f"export directory {f} is a file, not a directory"),
                                (f / "emotion", f"cannot create export directory {f / 'emotion'}: {f} is a file, "
                                                f"not a directory")):
        r = tool("-m", "emotion_e2e.export", f"--run_dir={run('audio')}", f"--export_dir={export_dir}", cwd=REPO)
        assert one_line_error(r) == f"error: {message}"
    assert os.listdir(tmp_path) == ["models"] and f.read_text() == "not a folder"


def test_a_failed_export_leaves_nothing_and_the_next_one_works(run, tmp_path, monkeypatch):
    base = str(tmp_path / "models")

    def fail(cfg):
        assert os.listdir(base) and os.path.exists(os.path.join(base, os.listdir(base)[0], "saved_model.pb"))
        raise OSError("disk full")  # after the SavedModel is written, before the version is complete

    with monkeypatch.context() as m:
        m.setattr(export, "warmup_requests", fail)
        with pytest.raises(ConfigError, match=f"^cannot write {base}/1: disk full; nothing was written there$"):
            export.export_run(run("audio"), base)
    assert os.listdir(base) == []
    assert export.export_run(run("audio"), base) == os.path.join(base, "1")


def test_a_full_disk_is_one_line_and_keeps_the_versions_there(run, small_disk):
    base = os.path.join(small_disk.path, "models")
    export.export_run(run("audio"), base)
    before = snapshot(base)
    small_disk.fill(leave=64 * 1024)  # less than a version: the SavedModel's writes fail part way
    r = tool("-m", "emotion_e2e.export", f"--run_dir={run('audio')}", f"--export_dir={base}", cwd=REPO)
    line = one_line_error(r)
    assert line == f"error: cannot write {base}/2: No space left on device; nothing was written there"
    assert snapshot(base) == before  # version 1 byte for byte, no .partial-* folder left


def test_a_killed_export_leaves_no_version_and_the_next_one_works(run, tmp_path):
    base = tmp_path / "models"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "-m", "emotion_e2e.export", f"--run_dir={run('audio')}",
                             f"--export_dir={base}"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            partial = [p for p in base.glob(".partial-*") if any(p.iterdir())] if base.exists() else []
            if partial:  # writing has begun
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        proc.kill()
        _, stderr = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the export was not killed while writing: {stderr[-2000:]}"
    assert export.versions(str(base)) == []
    assert [p.name for p in base.iterdir() if not p.name.startswith(".")] == []
    assert export.export_run(run("audio"), str(base)) == str(base / "1")


def test_two_exports_at_once_into_one_folder_leave_only_complete_versions(run, exported, tmp_path):
    base = tmp_path / "models"
    command = [sys.executable, "-m", "emotion_e2e.export", f"--run_dir={run('audio')}", f"--export_dir={base}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    procs = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.communicate(timeout=600), p.returncode) for p in procs]
    for (_, stderr), code in results:  # each either exports or stops with one line (both took the same version)
        assert code == 0 or (code == 1 and stderr.strip().splitlines()[-1].startswith("error: ")
                             and "Traceback" not in stderr), stderr[-3000:]
    done = sum(code == 0 for _, code in results)
    assert done >= 1 and len(export.versions(str(base))) == done
    assert sorted(os.listdir(base)) == [str(v) for v in export.versions(str(base))]  # no partial folder left
    whole = set(snapshot(exported("audio")[1]))  # the files of a complete version
    for v in export.versions(str(base)):
        assert set(snapshot(str(base / str(v)))) == whole, v
