"""The import of the authors' TF1 checkpoints, against their graph rebuilt in TF1 graph mode with
TF-slim (tests/tf1ref/reference_graph.py, run once in a subprocess with tf-keras as Keras): the
imported model computes what the graph computes for the audio, video and multimodal graphs,
under each generation of TF1's LSTM names; missing, extra and misshapen variables are one error
naming them, before anything is written; the imported run exports."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from emotion_e2e import evaluation, export, import_tf1
from emotion_e2e import run_dir as run_lib
from emotion_e2e.config import LABEL_NAMES
from emotion_e2e.errors import ConfigError
from emotion_e2e.models import build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_SCRIPT = os.path.join(REPO, "tests", "tf1ref", "reference_graph.py")
TOLERANCE = 1e-4
# The reference outputs must vary with the inputs: a graph whose LSTM gates saturate gives
# nearly constant outputs, which a wrongly mapped feature network would reproduce as well.
MIN_OUTPUT_STD = 0.01
# The authors' --model values, as the reference script names its graphs, and their modalities.
GRAPHS = {"audio": ("audio",), "video": ("video",), "both": ("audio", "video")}
CHECKPOINT = "model.ckpt-0"
NEWEST = "TF >= 1.3"


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
    inputs = {ours: data[theirs] for ours, theirs in (("audio", "audio"), ("face", "video")) if theirs in data}
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
    """``rename`` for ``rewrite``: the newest LSTM names → ``generation``'s (Adam's slots too)."""
    new, old = import_tf1.LSTM_GENERATIONS[NEWEST], import_tf1.LSTM_GENERATIONS[generation]
    pairs = {new.kernel: old.kernel, new.bias: old.bias, **dict(zip(new.peepholes, old.peepholes))}

    def rename(name):
        for k in range(2):
            prefix = new.cell.format(k=k) + "/"
            if name.startswith(prefix):
                leaf, slash, slot = name[len(prefix):].partition("/")
                return old.cell.format(k=k) + "/" + pairs[leaf] + slash + slot
        return name

    return rename


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


@pytest.mark.parametrize("generation", [g for g in import_tf1.LSTM_GENERATIONS if g != NEWEST])
def test_older_lstm_names(reference, generation, tmp_path):
    ckpt = rewrite(reference / "audio" / CHECKPOINT, tmp_path / "old" / CHECKPOINT, rename=to_generation(generation))
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
