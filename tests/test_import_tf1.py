"""The import of the authors' TF1 checkpoints, against their graph rebuilt in TF1 graph mode with
TF-slim (tests/tf1ref/reference_graph.py, run once in a subprocess with tf-keras as Keras): the
imported model computes what the graph computes for the audio, video and multimodal graphs,
with the cell state clipped too, under each generation of TF1's LSTM names; trained by
``compile_model``'s loss and optimizer, it takes the training steps the authors' graph takes (in
float32, and in float64 where float32 does not resolve ResNet-50's gradients);
missing, extra and misshapen variables are one error naming them, before anything is written;
the imported runs export, and the export reads uint8 faces as the graph reads them / 255."""

import contextlib
import functools
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from emotion_e2e import evaluation, export, import_tf1, training
from emotion_e2e import run_dir as run_lib
from emotion_e2e.config import LABEL_NAMES
from emotion_e2e.errors import ConfigError
from emotion_e2e.models import build_model, feature_network

# One worker runs this module's tests (make test: --dist loadgroup): the reference graphs are
# built once, not once per worker.
pytestmark = pytest.mark.xdist_group("tf1_reference")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_SCRIPT = os.path.join(REPO, "tests", "tf1ref", "reference_graph.py")
TOLERANCE = 1e-4
# The reference outputs must vary with the inputs: a graph whose LSTM gates saturate gives
# nearly constant outputs, which a wrongly mapped feature network would reproduce as well.
MIN_OUTPUT_STD = 0.01
# The authors' --model values, as the reference script names its graphs, and their modalities.
GRAPHS = {"audio": ("audio",), "video": ("video",), "both": ("audio", "video")}
CHECKPOINT = "model.ckpt-0"
INPUT_NAMES = (("audio", "audio"), ("face", "video"))  # (our input, the reference's array)
NEWEST = "TF >= 1.3"
# The reference's LSTM variables carry the names of the TF it runs on (>= 1.3). The older
# generations' names of layer k, as TF's RNN code of those versions created them (dynamic_rnn's
# scope, MultiRNNCell's per-layer scope, LSTMCell's scope and variables), keyed by the newest
# leaf. Written out here, not taken from import_tf1.LSTM_GENERATIONS, so that a mistake in that
# table fails.
OLD_LSTM_NAMES = {
    "TF <= 0.12": {"kernel": "RNN/MultiRNNCell/Cell{k}/LSTMCell/W_0",
                   "bias": "RNN/MultiRNNCell/Cell{k}/LSTMCell/B",
                   "w_i_diag": "RNN/MultiRNNCell/Cell{k}/LSTMCell/W_I_diag",
                   "w_f_diag": "RNN/MultiRNNCell/Cell{k}/LSTMCell/W_F_diag",
                   "w_o_diag": "RNN/MultiRNNCell/Cell{k}/LSTMCell/W_O_diag"},
    "TF 1.0-1.2": {"kernel": "rnn/multi_rnn_cell/cell_{k}/lstm_cell/weights",
                   "bias": "rnn/multi_rnn_cell/cell_{k}/lstm_cell/biases",
                   "w_i_diag": "rnn/multi_rnn_cell/cell_{k}/lstm_cell/w_i_diag",
                   "w_f_diag": "rnn/multi_rnn_cell/cell_{k}/lstm_cell/w_f_diag",
                   "w_o_diag": "rnn/multi_rnn_cell/cell_{k}/lstm_cell/w_o_diag"},
}
NEWEST_LSTM_NAME = re.compile(r"rnn/multi_rnn_cell/cell_(\d+)/lstm_cell/(\w+)(/Adam(?:_1)?)?")
CELL_CLIP = 100.0  # the authors' LSTMCell(cell_clip=100)
# The training steps (the reference's TRAINED): the largest difference relative to the
# reference's largest magnitude, per variable (a gradient, a weight, a moving statistic) and for
# the loss, by dtype. float32 sums in another order: the output bias's gradient, a sum over every
# frame of the CCC loss's gradient (itself a difference of means), measured 1.0e-5 after the
# LSTMs' hand-written backward pass (2.6e-6 with autodiff through every step); every other
# variable stays under 7e-6. In float64 the largest is 3.9e-11 (docs/design.md §11).
TRAINING_TOLERANCE = {"float32": 2e-5, "float64": 1e-9}
# Adam's first steps move an element by about lr · g / (|g| + ε): an element whose gradient is
# near ε (1e-8) moves by a fraction of the learning rate that its gradient's last bits decide.
# In float32 the trained weights may differ by this fraction of the learning rate per step beyond
# TRAINING_TOLERANCE; float64 resolves those gradients.
ADAM_EPSILON_SLACK = {"float32": 0.02, "float64": 0.0}
# What is compared, (graph, dtype, step, kind). In float32, what training runs in: everything
# on the audio graph (its two batch norms in training mode, the input dropout's mask, the weight
# decay, the LSTMs, the head, the loss, Adam) and the moving statistics of the multimodal
# graph's 55 batch norms after its first step; ResNet-50's gradients in training mode on 8
# faces are not resolved to 1e-5 in float32 (docs/design.md §11). In float64, everything on the
# multimodal graph: every gradient of the first step, every weight and moving statistic after
# the third.
TRAINING_CHECKS = [("audio", "float32", step, kind) for step in (1, 3) for kind in ("grad", "weights", "moving")] + [
    ("both", "float32", 1, "moving"), ("both", "float64", 1, "grad"), ("both", "float64", 3, "weights"),
    ("both", "float64", 3, "moving")]
TRAINING_LOSS_STEPS = {("audio", "float32"): 3, ("both", "float32"): 1, ("both", "float64"): 3}  # the steps taken
# How many checkpoint variables each kind covers: the audio graph's 22 variables (2 convolutions
# with 4 batch-norm variables each, 2 LSTMs of 5, the head's 2), of which 4 are moving
# statistics; the multimodal graph's 2 per batch norm (2 audio, 53 ResNet-50) and its 1 + 2
# trained variables per convolution and batch norm, 10 LSTM and 2 head ones.
TRAINED_VARIABLES = {("audio", "grad"): 18, ("audio", "weights"): 18, ("audio", "moving"): 4,
                     ("both", "moving"): 2 * (2 + 53), ("both", "grad"): 3 * (2 + 53) + 10 + 2,
                     ("both", "weights"): 3 * (2 + 53) + 10 + 2}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The folder the reference script wrote: ``<graph>/model.ckpt-0`` and ``<graph>/reference.npz``."""
    out = tmp_path_factory.mktemp("tf1ref")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, REFERENCE_SCRIPT, str(out)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def reference_data(reference, graph):
    """``(inputs, outputs)``: the model's inputs keyed by our modality names, and the graph's
    outputs as ``{label: (batch, time)}``."""
    data = np.load(reference / graph / "reference.npz")
    inputs = {ours: data[theirs] for ours, theirs in INPUT_NAMES if theirs in data}
    return inputs, {name: data["outputs"][..., j] for j, name in enumerate(LABEL_NAMES)}


def max_difference(run_dir, reference, graph) -> float:
    """Largest absolute difference between the imported run's best model and the graph."""
    inputs, want = reference_data(reference, graph)
    got = run_lib.load_checkpoint(run_dir)(inputs, training=False)
    return max(float(np.abs(np.asarray(got[n]) - want[n]).max()) for n in want)


def rewrite(src, dst, rename=None, drop=(), add=None):
    """A copy of checkpoint ``src`` at prefix ``dst``: variables renamed by ``rename(name)``, those in
    ``drop`` left out, ``add`` ({name: array}) added. Written by TF's own SaveV2 op."""
    reader = tf.train.load_checkpoint(str(src))
    tensors = {(rename or str)(n): reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if n not in drop}
    tensors.update(add or {})
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tf.raw_ops.SaveV2(prefix=str(dst), tensor_names=list(tensors), shape_and_slices=[""] * len(tensors),
                      tensors=list(tensors.values()))
    return str(dst)


def to_generation(generation):
    """``rename`` for ``rewrite``: the newest LSTM names → ``generation``'s (Adam's slots too),
    from ``OLD_LSTM_NAMES``."""

    def rename(name):
        match = NEWEST_LSTM_NAME.fullmatch(name)
        if not match:
            return name
        k, leaf, slot = match.groups()
        return OLD_LSTM_NAMES[generation][leaf].format(k=k) + (slot or "")

    return rename


@pytest.fixture(scope="module")
def imported(reference, tmp_path_factory):
    """``imported(graph)``: the run directory of ``graph``'s reference checkpoint, imported once."""
    runs = {}

    def run_of(graph):
        if graph not in runs:
            runs[graph] = tmp_path_factory.mktemp(f"imported_{graph}") / "run"
            import_tf1.import_checkpoint(str(reference / graph / CHECKPOINT), GRAPHS[graph], str(runs[graph]))
        return runs[graph]

    return run_of


@pytest.mark.parametrize("graph", GRAPHS)
def test_imported_model_computes_the_authors_graph(reference, graph, tmp_path):
    run = tmp_path / "run"
    run.mkdir()  # an empty run directory is taken
    summary = import_tf1.import_checkpoint(str(reference / graph / CHECKPOINT), GRAPHS[graph], str(run))
    _, want = reference_data(reference, graph)
    assert min(y.std() for y in want.values()) > MIN_OUTPUT_STD  # else the comparison proves little
    difference = max_difference(run, reference, graph)
    print(f"{graph}: max |keras - tf1| = {difference:.3g}")
    assert difference <= TOLERANCE
    cfg = run_lib.load_config(str(run))
    assert cfg.inputs.modalities == tuple(import_tf1.MODALITY_NAMES[m] for m in GRAPHS[graph])
    assert (cfg.model.recurrent.layers, cfg.model.recurrent.units) == (2, 256)
    assert summary["lstm_names"] == NEWEST
    with open(run_lib.checkpoint_path(str(run), "best"), "rb") as best, \
            open(run_lib.checkpoint_path(str(run), "last"), "rb") as last:
        assert best.read() == last.read()
    if graph == "audio":  # its checkpoint holds the training state as well
        ignored = summary["ignored"]
        assert {"global_step", "beta1_power", "beta2_power"} <= set(ignored)
        assert "audio_model/Conv/weights/Adam" in ignored and "fully_connected/biases/Adam_1" in ignored
        assert all(n.endswith(("/Adam", "/Adam_1")) for n in ignored if "/" in n)


def test_every_generation_of_lstm_names_is_tested():
    assert set(import_tf1.LSTM_GENERATIONS) == {NEWEST, *OLD_LSTM_NAMES}


@pytest.mark.parametrize("generation", OLD_LSTM_NAMES)
def test_older_lstm_names(reference, generation, tmp_path):
    ckpt = rewrite(reference / "audio" / CHECKPOINT, tmp_path / "old" / CHECKPOINT, rename=to_generation(generation))
    names = tf.train.load_checkpoint(ckpt).get_variable_to_shape_map()
    assert OLD_LSTM_NAMES[generation]["kernel"].format(k=1) in names
    assert OLD_LSTM_NAMES[generation]["w_o_diag"].format(k=0) + "/Adam_1" in names
    summary = import_tf1.import_checkpoint(ckpt, ("audio",), str(tmp_path / "run"))
    assert summary["lstm_names"] == generation
    assert max_difference(tmp_path / "run", reference, "audio") <= TOLERANCE


def assert_refused(tmp_path, ckpt, match, **kwargs):
    """The import raises ConfigError matching every pattern of ``match`` and writes nothing."""
    with pytest.raises(ConfigError) as e:
        import_tf1.import_checkpoint(ckpt, kwargs.pop("modalities", ("audio",)), str(tmp_path / "run"), **kwargs)
    for pattern in match:
        assert pattern in str(e.value), str(e.value)
    assert len(str(e.value).splitlines()) == 1
    assert not [p for p in os.listdir(tmp_path) if p not in ("ckpt",)]


def test_missing_variables_are_one_error(reference, tmp_path):
    missing = ["audio_model/Conv_1/BatchNorm/moving_variance", "rnn/multi_rnn_cell/cell_1/lstm_cell/w_o_diag"]
    ckpt = rewrite(reference / "audio" / CHECKPOINT, tmp_path / "ckpt" / CHECKPOINT, drop=missing)
    assert_refused(tmp_path, ckpt, ["2 variables of the graph are missing", *missing])


def test_extra_variables_are_one_error(reference, tmp_path):
    extra = {"audio_model/Conv_2/weights": np.zeros((1, 3, 40, 40), np.float32),
             "fully_connected_1/biases": np.zeros(2, np.float32)}
    ckpt = rewrite(reference / "audio" / CHECKPOINT, tmp_path / "ckpt" / CHECKPOINT, add=extra)
    assert_refused(tmp_path, ckpt, ["2 variables are not in the graph", *extra])


def test_other_modalities_are_extra_variables_with_a_hint(reference, tmp_path):
    assert_refused(tmp_path, str(reference / "both" / CHECKPOINT),
                   ["265 variables are not in the graph", "video_model/resnet_v1_50/conv1/weights",
                    "--modalities=audio,video?"])


def test_a_wrong_shape_names_the_variable_and_both_shapes(reference, tmp_path):
    assert_refused(tmp_path, str(reference / "audio" / CHECKPOINT),
                   ["fully_connected/weights: checkpoint (256, 2), graph (256, 1)"], label_names=("arousal",))


def test_a_non_empty_run_dir_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an empty directory"):
        import_tf1.import_checkpoint(str(tmp_path / "none"), ("audio",), str(tmp_path / "run"))
    assert os.listdir(tmp_path / "run") == ["notes.txt"]


def test_the_mapping_fills_every_weight_once(monkeypatch):
    cfg = import_tf1.train_config(("audio",), LABEL_NAMES, "", import_tf1.RecurrentConfig(layers=1, units=4))
    model = build_model(cfg.model, cfg.inputs)
    lstm = import_tf1.LSTM_GENERATIONS[NEWEST]
    assert len(import_tf1.variable_mapping(model, cfg, lstm)) == 10 + 5 + 2  # audio net, LSTM layer, head
    monkeypatch.setattr(import_tf1, "head_mapping", lambda model, names: [])
    with pytest.raises(ValueError, match=r"it fills \d+ for \d+ weights, these not once: .*head_arousal"):
        import_tf1.variable_mapping(model, cfg, lstm)


@pytest.mark.parametrize("names", [("face", "video"), ("audio", "speech"), ()])
def test_modality_names(names):
    with pytest.raises(ConfigError, match="--modalities takes audio and/or face"):
        import_tf1.modalities_from_flag(names)


def test_import_then_evaluate_on_a_corpus(reference, corpus, tmp_path):
    run = str(tmp_path / "run")
    import_tf1.import_checkpoint(str(reference / "audio" / CHECKPOINT), ("audio",), run, data_dir=corpus)
    report = evaluation.evaluate_run(run, plots=False)
    assert set(report["scores"]["partition"]["ccc"]) == {*LABEL_NAMES, "mean"}


@pytest.mark.parametrize("modalities, meta_change, match", [
    (("audio", "face"), {"modalities": ["audio"]}, "holds audio with 640 samples per frame"),
    (("audio",), {"samples_per_frame": 320}, "the authors' graph reads audio with 640 samples per frame"),
    (("face",), {"face": {"size": 64}}, "64-pixel faces; the authors' graph reads face with 640"),
    (("audio",), {"partitions": {"dev": {"label_names": ["arousal"]}}}, "partition 'dev' of DATA has labels"),
])
def test_data_that_does_not_fit_the_graph(monkeypatch, modalities, meta_change, match):
    from emotion_e2e.data import metadata  # noqa: PLC0415

    meta = {"modalities": ["audio", "face"], "samples_per_frame": 640, "face": {"size": 96},
            "partitions": {"dev": {"label_names": list(LABEL_NAMES)}}, **meta_change}
    monkeypatch.setattr(metadata, "read", lambda directory: meta)
    cfg = import_tf1.train_config(modalities, LABEL_NAMES, "DATA", import_tf1.RecurrentConfig())
    with pytest.raises(ConfigError, match=re.escape(match)):
        import_tf1.check_data(cfg)


def cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", "emotion_e2e.import_tf1", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


def test_cli_a_missing_checkpoint_is_one_error_line(tmp_path):
    missing = tmp_path / "nowhere" / CHECKPOINT
    proc = cli(f"--checkpoint={missing}", "--modalities=audio", f"--run_dir={tmp_path / 'run'}")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert str(missing) in proc.stderr and "not a readable TF1 checkpoint" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_cli_import_then_export_reproduces_the_graph(reference, tmp_path):
    run = tmp_path / "run"
    proc = cli(f"--checkpoint={reference / 'audio' / CHECKPOINT}", "--modalities=audio", f"--run_dir={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "imported 22 variables" in proc.stdout
    version = export.export_run(str(run), str(tmp_path / "export"))
    with open(os.path.join(version, export.ASSETS_EXTRA, export.DESCRIPTION_FILE)) as f:
        assert json.load(f)["modalities"] == ["audio"]
    inputs, want = reference_data(reference, "audio")
    serve = tf.saved_model.load(version).signatures[export.DEFAULT_SIGNATURE]
    got = serve(audio=tf.constant(inputs["audio"]))
    for name in want:
        np.testing.assert_allclose(got[name].numpy(), want[name], rtol=0, atol=TOLERANCE)


def test_the_clipped_cell_state_computes_the_authors_graph(reference, tmp_path):
    """Half the first LSTM's cells pass ±100 within the reference's frames: the clip fires in
    the graph and changes its outputs, and the imported model computes the clipped ones."""
    data = np.load(reference / "clip" / "reference.npz")
    assert np.abs(data["final_c"]).max() == CELL_CLIP
    assert np.abs(data["outputs"] - data["unclipped"]).max() > 100 * TOLERANCE
    import_tf1.import_checkpoint(str(reference / "clip" / CHECKPOINT), GRAPHS["audio"], str(tmp_path / "run"))
    difference = max_difference(tmp_path / "run", reference, "clip")
    print(f"clip: max |keras - tf1| = {difference:.3g}")
    assert difference <= TOLERANCE


@pytest.mark.parametrize("graph", ["video", "both"])
def test_the_export_reads_uint8_faces_as_the_graph_reads_them_over_255(reference, imported, graph, tmp_path):
    version = export.export_run(str(imported(graph)), str(tmp_path / "export"))
    data = np.load(reference / graph / "reference.npz")
    assert data["video_uint8"].dtype == np.uint8
    np.testing.assert_array_equal(data["video"], (data["video_uint8"] / np.float32(255)).astype(np.float32))
    feed = {"face": tf.constant(data["video_uint8"])}
    if "audio" in GRAPHS[graph]:
        feed["audio"] = tf.constant(data["audio"])
    got = tf.saved_model.load(version).signatures[export.DEFAULT_SIGNATURE](**feed)
    _, want = reference_data(reference, graph)
    difference = max(float(np.abs(got[n].numpy() - want[n]).max()) for n in want)
    print(f"{graph} export, uint8 faces: max |serving - tf1| = {difference:.3g}")
    assert difference <= TOLERANCE


def relative_difference(ours, theirs) -> float:
    """``max |ours − theirs| / max |theirs|``: the difference on the scale of the tensor."""
    return float(np.abs(np.asarray(ours) - theirs).max() / max(np.abs(theirs).max(), np.finfo(np.float32).tiny))


@contextlib.contextmanager
def global_policy(dtype):
    """Keras' floatx and global dtype policy ``dtype`` inside the block, restored after it."""
    floatx, policy = keras.config.floatx(), keras.mixed_precision.global_policy()
    keras.config.set_floatx(dtype)
    keras.mixed_precision.set_global_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(floatx)
        keras.mixed_precision.set_global_policy(policy)


def train_like_the_reference(run, data, dtype) -> dict:
    """The imported model of ``run``, built in ``dtype``, trained as ``train.py`` trains it
    (``compile_model``'s loss, weight decay and optimizer; Keras' train step) on the reference's
    batch ``data`` (``<graph>/training_<dtype>.npz``), step by step from the reference's weights.

    The reference feeds audio with one fixed dropout mask already applied and its dropout off:
    the model's input dropout is set off the same way. Returns ``{'loss': [relative difference
    per step], (step, kind): {variable: (difference, bound)}}`` for the steps and kinds the
    reference wrote: ``grad`` (the step's gradient), ``weights`` (the trained weights after the
    step), ``moving`` (the moving statistics after the step), each difference relative
    (``relative_difference``) and its bound ``TRAINING_TOLERANCE`` (for the weights plus
    ``ADAM_EPSILON_SLACK`` learning rates per step)."""
    cfg = run_lib.load_config(str(run))
    weights = run_lib.load_checkpoint(str(run)).get_weights()
    with global_policy(dtype):
        model = build_model(cfg.model, cfg.inputs)
        model.set_weights(weights)
        feature_network(model, "audio").get_layer("input_dropout").rate = 0.0
        training.compile_model(model, cfg)
        x = {ours: data[theirs] for ours, theirs in INPUT_NAMES if ours in cfg.inputs.modalities}
        y = {n: data["labels"][..., j] for j, n in enumerate(LABEL_NAMES)}
        mask = {n: np.ones(data["labels"].shape[:2], dtype) for n in LABEL_NAMES}
        mapped = import_tf1.variable_mapping(model, cfg, import_tf1.LSTM_GENERATIONS[NEWEST])
        tolerance, slack = TRAINING_TOLERANCE[dtype], ADAM_EPSILON_SLACK[dtype] * cfg.optimizer.learning_rate
        result = {"loss": []}
        for step in range(1, len(data["loss"]) + 1):
            statistics = [v.numpy() for v in model.non_trainable_variables]
            with tf.GradientTape() as tape:
                loss = model.compute_loss(x, y, model(x, training=True), mask, training=True)
            grads = {}  # ResNet-50's backward pass is taken once more only where the gradients are compared
            if any(name.startswith(f"grad{step}/") for name in data.files):
                grads = dict(zip((id(v) for v in model.trainable_variables),
                                 tape.gradient(loss, model.trainable_variables)))
            for v, value in zip(model.non_trainable_variables, statistics):  # the step below moves them once
                v.assign(value)
            model.reset_metrics()
            logs = model.train_on_batch(x, y, mask, return_dict=True)
            np.testing.assert_allclose(logs["loss"], float(loss), rtol=1e-6)  # fit's loss is the one differentiated
            result["loss"].append(relative_difference(float(loss), data["loss"][step - 1]))  # logs' are float32
            for m in mapped:
                ours = {"moving" if "/moving_" in m.name else "weights": [w.numpy() for w in m.weights],
                        "grad": [grads.get(id(w)) for w in m.weights]}
                for kind, values in ours.items():
                    if f"{kind}{step}/{m.name}" not in data:
                        continue
                    result.setdefault((step, kind), {})[m.name] = max(  # the piece nearest its bound
                        ((relative_difference(a, b), tolerance + (kind == "weights") * slack * step / np.abs(b).max())
                         for a, b in zip(values, m.split(data[f"{kind}{step}/{m.name}"]))), key=lambda d: d[0] / d[1])
    return result


@pytest.fixture(scope="module")
def training_steps(reference, imported):
    """``training_steps(graph, dtype)``: ``train_like_the_reference`` for ``graph`` in ``dtype``, run once."""
    return functools.cache(lambda graph, dtype: train_like_the_reference(
        imported(graph), np.load(reference / graph / f"training_{dtype}.npz"), dtype))


@pytest.mark.parametrize("graph, dtype", TRAINING_LOSS_STEPS)
def test_training_loss_matches_the_authors_graph(training_steps, graph, dtype):
    differences = training_steps(graph, dtype)["loss"]
    print(f"{graph}, {dtype}: loss, relative difference per step:", ", ".join(f"{d:.3g}" for d in differences))
    assert len(differences) == TRAINING_LOSS_STEPS[(graph, dtype)]
    assert max(differences) <= TRAINING_TOLERANCE[dtype]


@pytest.mark.parametrize("graph, dtype, step, kind", TRAINING_CHECKS)
def test_training_steps_match_the_authors_graph(training_steps, graph, dtype, step, kind):
    differences = training_steps(graph, dtype)[(step, kind)]
    largest = max(differences, key=lambda n: differences[n][0])
    print(f"{graph}, {dtype}, step {step}, {kind}: {len(differences)} variables, largest relative difference "
          f"{differences[largest][0]:.3g} ({largest})")
    assert len(differences) == TRAINED_VARIABLES[(graph, kind)]
    assert not {n: d for n, d in differences.items() if d[0] > d[1]}
