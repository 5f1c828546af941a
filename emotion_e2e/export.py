r"""Exports a training run as a TensorFlow Serving SavedModel.

  python -m emotion_e2e.export --run_dir=runs/demo_multimodal --export_dir=models/emotion
  python -m emotion_e2e.export --run_dir=runs/demo_multimodal --checkpoint=last --export_dir=models/emotion --version=7

Writes one version in TF Serving's layout (the server loads the highest)::

    EXPORT_DIR/
      1/
        saved_model.pb, variables/            tag 'serve', signatures 'serving_default' and 'stream'
        assets.extra/tf_serving_warmup_requests   one small PredictionLog request per signature
        assets.extra/emotion_e2e.json             time base, face crops, inputs, outputs, state: all a client needs

The graph is ``optimize_for_inference`` of the checkpoint (batch norms folded, the LSTM input
projection hoisted) with its LSTMs' state exposed (``with_recurrent_state``):

- ``serving_default``: ``audio`` float32 ``(batch, time, samples_per_frame)`` and/or ``face``
  uint8 ``(batch, time, face_size, face_size, 3)`` RGB (scaled to [0, 1] inside), the
  modalities the model uses → one float32 ``(batch, time)`` output per label dimension.
- ``stream``: the same inputs plus ``h_1, c_1, h_2, c_2, …`` float32 ``(batch, units)``, the
  state of each LSTM layer (zeros start a sequence) → the label outputs plus the state after
  the chunk's last frame under the same names. Carrying the state from one chunk into the next
  gives the outputs of one ``serving_default`` call on the whole sequence.

The time base and the face crop settings (size, margin, JPEG quality, detector, alignment) in
emotion_e2e.json come from the data's metadata.json, so a client cuts faces as the training data
was cut; when the run's data directory is gone they are the default 40 ms frame step with
config.json's samples per frame and FaceConfig's defaults with its face size, and the export
warns and says so (``time_base_source``, ``face_source``).

A version is built in a hidden temporary folder inside EXPORT_DIR and renamed when complete, so
a server never sees half of one; an export that fails removes its folder, one that is killed
leaves a hidden ``.partial-*`` folder that servers and later exports ignore (safe to delete).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import uuid

import numpy as np

from emotion_e2e import config as config_lib
from emotion_e2e import run_dir as run_lib
from emotion_e2e.config import MODALITIES, FaceConfig, TimeBase, TrainConfig
from emotion_e2e.errors import ConfigError

DEFAULT_SIGNATURE = "serving_default"  # what TF Serving runs when a request names no signature
STREAM_SIGNATURE = "stream"
SIGNATURES = (DEFAULT_SIGNATURE, STREAM_SIGNATURE)
ASSETS_EXTRA = "assets.extra"  # TF Serving's folder for files beside the SavedModel
WARMUP_FILE = "tf_serving_warmup_requests"  # the name TF Serving looks for
DESCRIPTION_FILE = "emotion_e2e.json"
# Of emotion_e2e.json; 2 added the face crop settings ("face", "face_source"), 3 the training
# labels' statistics ("labels", "labels_source").
FORMAT_VERSION = 3
LABEL_STATISTICS = ("mean", "std", "min", "max")  # per label dimension, of the training partition (metadata.json)
PARTIAL_PREFIX = ".partial-"  # hidden: TF Serving only loads folders named by an integer
FIRST_VERSION = 1
# The input dtypes: the waveform as the reader yields it; faces as a camera or JPEG decoder gives
# them (a quarter of the bytes of float32 on the wire), scaled to [0, 1] inside the graph.
INPUT_DTYPES = {"audio": "float32", "face": "uint8"}
OUTPUT_DTYPE = STATE_DTYPE = "float32"
# Warm-up requests are as small as a real one can be: one sequence of a few frames.
WARMUP_BATCH, WARMUP_FRAMES = 1, 2


def versions(export_dir: str) -> list[int]:
    """The versions in ``export_dir`` (its sub-folders named by an integer), sorted."""
    if not os.path.isdir(export_dir):
        return []
    return sorted(int(n) for n in os.listdir(export_dir)
                  if n.isdigit() and os.path.isdir(os.path.join(export_dir, n)))


def input_shapes(cfg: TrainConfig) -> dict[str, tuple]:
    """``{modality: shape}`` of the modalities the run's model uses; batch and time are None."""
    size = cfg.inputs.face_size
    shapes = {"audio": (None, None, cfg.inputs.samples_per_frame), "face": (None, None, size, size, 3)}
    return {m: shapes[m] for m in MODALITIES if m in cfg.inputs.modalities}


def state_units(cfg: TrainConfig) -> dict[str, int]:
    """``{state name: units}`` of the stream signature's state inputs and outputs, in order."""
    from emotion_e2e.models.inference import state_names  # noqa: PLC0415 - keeps TF out of --help

    rnn = cfg.model.recurrent
    return {name: rnn.units for name in state_names(rnn.layers)}


def signature_specs(cfg: TrainConfig) -> dict[str, dict]:
    """The contract of both signatures: ``{signature: {'inputs': {name: {'dtype', 'shape'}},
    'outputs': {...}}}``, shapes with None for the dynamic batch and time."""
    inputs = {m: {"dtype": INPUT_DTYPES[m], "shape": list(s)} for m, s in input_shapes(cfg).items()}
    labels = {n: {"dtype": OUTPUT_DTYPE, "shape": [None, None]} for n in cfg.inputs.label_names}
    state = {n: {"dtype": STATE_DTYPE, "shape": [None, units]} for n, units in state_units(cfg).items()}
    return {DEFAULT_SIGNATURE: {"inputs": inputs, "outputs": labels},
            STREAM_SIGNATURE: {"inputs": {**inputs, **state}, "outputs": {**labels, **state}}}


def time_base(cfg: TrainConfig) -> tuple[TimeBase, str | None]:
    """The run's time base, and None when it comes from the data's ``metadata.json`` or else
    a note saying where it comes from.

    ``metadata.json`` holds it; a run directory may outlive its data directory, though, and
    config.json holds only ``samples_per_frame``: then the time base is the design's 40 ms
    frame step with the sample rate that makes ``samples_per_frame`` samples of it (16 kHz for
    640). ConfigError when metadata.json disagrees with the run's ``samples_per_frame`` (the
    data was converted again since) or the fallback does not come out as a whole sample rate.
    """
    from emotion_e2e.data import metadata  # noqa: PLC0415

    path = os.path.join(cfg.data_dir, metadata.FILENAME)
    spf = cfg.inputs.samples_per_frame
    if os.path.isfile(path):
        tb = TimeBase(**metadata.read(cfg.data_dir)["time_base"])
        if tb.samples_per_frame != spf:
            raise ConfigError(f"{path} has {tb.samples_per_frame} samples per frame ({tb}) but the run was "
                              f"trained on {spf}: the data was converted again since")
        return tb, None
    frame_step = TimeBase().frame_step
    try:
        tb = TimeBase(frame_step=frame_step, sample_rate=int(round(spf / frame_step)))
    except ValueError as e:
        raise ConfigError(f"{path} not found, and {spf} samples per frame (config.json) do not fit the "
                          f"default {frame_step} s frame step: {e}") from e
    return tb, (f"{path} not found: the time base is the default {frame_step} s frame step with the "
                f"{spf} samples per frame of {run_lib.CONFIG}, i.e. {tb.sample_rate} Hz")


def face_settings(cfg: TrainConfig) -> tuple[FaceConfig, str | None]:
    """The face crop settings the run's data was converted with, and None when they come from
    the data's ``metadata.json`` or else a note saying where they come from.

    Like ``time_base``: without ``metadata.json`` they are ``FaceConfig``'s defaults with the
    run's ``face_size``. ConfigError when a face model's ``face_size`` is not the crop size of
    ``metadata.json`` (the data was converted again since).
    """
    from emotion_e2e.data import metadata  # noqa: PLC0415

    path = os.path.join(cfg.data_dir, metadata.FILENAME)
    size = cfg.inputs.face_size
    if os.path.isfile(path):
        meta = metadata.read(cfg.data_dir)  # DataError for a damaged file
        try:
            face = config_lib.from_dict(FaceConfig, meta["face"])
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{path}: no valid face crop settings ('face'): {e}") from e
        if "face" in cfg.inputs.modalities and face.size != size:
            raise ConfigError(f"{path} has {face.size}-pixel face crops but the run was trained on {size}: "
                              f"the data was converted again since")
        return face, None
    return FaceConfig(size=size), (f"{path} not found: the face crops are FaceConfig's defaults with the "
                                   f"{size}-pixel face size of {run_lib.CONFIG}")


def label_statistics(cfg: TrainConfig) -> tuple[dict | None, str]:
    """``{label name: {"mean", "std", "min", "max"}}`` of the run's training partition
    (``cfg.train_partition``) as ``metadata.json`` records them, the scale the model's outputs
    were trained to; and where they come from. None, with a note saying why, when the data
    directory or those statistics are gone."""
    from emotion_e2e.data import metadata  # noqa: PLC0415

    path = os.path.join(cfg.data_dir, metadata.FILENAME)
    if not os.path.isfile(path):
        return None, f"{path} not found: the training labels' statistics are unknown"
    stats = metadata.read(cfg.data_dir)["partitions"].get(cfg.train_partition, {}).get("labels")
    names = cfg.inputs.label_names
    if not isinstance(stats, dict) or not set(names) <= set(stats):
        return None, f"{path} has no label statistics of partition {cfg.train_partition!r} for {list(names)}"
    source = f"{path}, partition {cfg.train_partition!r}"
    return {n: {k: float(stats[n][k]) for k in LABEL_STATISTICS} for n in names}, source


def describe(cfg: TrainConfig, tb: TimeBase, tb_note: str | None, face: FaceConfig, face_note: str | None,
             run_dir: str, checkpoint: str) -> dict:
    """The JSON asset: everything a client needs to cut a stream into requests and read the answers."""
    from emotion_e2e.data import metadata  # noqa: PLC0415

    labels, labels_source = label_statistics(cfg)

    rnn = cfg.model.recurrent
    return {
        "format_version": FORMAT_VERSION,
        "frame_step": tb.frame_step,
        "sample_rate": tb.sample_rate,
        "samples_per_frame": cfg.inputs.samples_per_frame,
        "face_size": cfg.inputs.face_size,
        "face_dtype": INPUT_DTYPES["face"],
        "face_scale": "RGB uint8 0..255, divided by 255 inside the graph",
        "time_base_source": tb_note or os.path.join(cfg.data_dir, metadata.FILENAME),
        "face": dataclasses.asdict(face),
        "face_source": face_note or os.path.join(cfg.data_dir, metadata.FILENAME),
        "modalities": list(cfg.inputs.modalities),
        "label_names": list(cfg.inputs.label_names),
        "labels": labels,
        "labels_source": labels_source,
        "lstm": {"layers": rnn.layers, "units": rnn.units, "cell": rnn.cell},
        "state_names": list(state_units(cfg)),
        "signatures": signature_specs(cfg),
        "run_dir": os.path.abspath(run_dir),
        "checkpoint": checkpoint,
    }


def run_description(cfg: TrainConfig, run_dir: str, checkpoint: str) -> dict:
    """``describe`` of checkpoint ``checkpoint`` of the run in ``run_dir`` (configuration ``cfg``),
    its time base and face crops from ``time_base`` and ``face_settings``; prints a warning to
    stderr for each that falls back to the defaults."""
    tb, tb_note = time_base(cfg)
    face, face_note = face_settings(cfg)
    for note in (tb_note, face_note):
        if note:
            print(f"warning: {note}", file=sys.stderr)
    return describe(cfg, tb, tb_note, face, face_note, run_dir, checkpoint)


def tensor_specs(cfg: TrainConfig, signature: str) -> dict:
    """``{name: tf.TensorSpec}`` of ``signature``'s inputs (``signature_specs``)."""
    import tensorflow as tf  # noqa: PLC0415

    inputs = signature_specs(cfg)[signature]["inputs"]
    return {n: tf.TensorSpec(s["shape"], s["dtype"], name=n) for n, s in inputs.items()}


def serving_functions(model, cfg: TrainConfig) -> dict:
    """``{signature: function}``: the functions behind both signatures, ``{name: tensor}`` →
    ``{name: tensor}`` as ``signature_specs`` describes them, for ``model`` (the run's Keras
    model, unchanged) optimized for inference with its LSTMs' state exposed. The export traces
    them into the SavedModel; ``emotion_e2e.predict`` runs the same functions on a run directory."""
    import tensorflow as tf  # noqa: PLC0415

    from emotion_e2e.models import optimize_for_inference  # noqa: PLC0415
    from emotion_e2e.models.inference import with_recurrent_state  # noqa: PLC0415
    from emotion_e2e.models.layers import PIXEL_SCALE  # noqa: PLC0415

    stateful = with_recurrent_state(optimize_for_inference(model))
    labels, states = list(cfg.inputs.label_names), list(state_units(cfg))

    def model_inputs(x):
        """The model's inputs from a request's: faces scaled to [0, 1]. A request without frames or
        with modalities of different lengths fails here, with a message a client can act on,
        rather than deep inside the graph."""
        modalities = cfg.inputs.modalities
        first = tf.shape(x[modalities[0]])[:2]  # (batch, time)
        checks = [tf.debugging.assert_positive(first[1], message="a request needs at least one frame")]
        checks += [tf.debugging.assert_equal(tf.shape(x[m])[:2], first, message=f"{m} and {modalities[0]} must "
                                             f"have the same batch and time sizes") for m in modalities[1:]]
        with tf.control_dependencies(checks):
            return {m: tf.cast(x[m], tf.float32) / PIXEL_SCALE if m == "face" else tf.identity(x[m])
                    for m in modalities}

    def run(x):
        return {k: tf.cast(v, OUTPUT_DTYPE) for k, v in stateful(x, training=False).items()}

    def serve(x):
        batch = tf.shape(x[cfg.inputs.modalities[0]])[0]
        zeros = {n: tf.zeros((batch, u), STATE_DTYPE) for n, u in state_units(cfg).items()}
        y = run({**model_inputs(x), **zeros})
        return {n: y[n] for n in labels}

    def stream(x):
        y = run({**model_inputs(x), **{n: x[n] for n in states}})
        return {n: y[n] for n in labels + states}

    return {DEFAULT_SIGNATURE: serve, STREAM_SIGNATURE: stream}


def build_archive(model, cfg: TrainConfig):
    """A ``keras.export.ExportArchive`` with the two signatures of ``model`` (the run's Keras
    model, unchanged): optimized for inference, its LSTMs' state exposed."""
    import keras  # noqa: PLC0415

    # No archive.track(stateful): it would save every variable twice (the Keras wrapper beside the
    # tf.Variable the functions capture); add_endpoint tracks what the functions use.
    archive = keras.export.ExportArchive()
    for signature, function in serving_functions(model, cfg).items():
        archive.add_endpoint(signature, function, input_signature=[tensor_specs(cfg, signature)])
    return archive


def warmup_requests(cfg: TrainConfig) -> list:
    """One small ``PredictionLog`` per signature (all-zero inputs), for TF Serving to run before
    it reports the model available, so the first real request does not pay for graph set-up."""
    import tensorflow as tf  # noqa: PLC0415
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2  # noqa: PLC0415

    def concrete(shape):  # the dynamic dimensions are batch, then time (absent from the state)
        sizes = iter((WARMUP_BATCH, WARMUP_FRAMES))
        return [next(sizes) if d is None else d for d in shape]

    logs = []
    for signature, spec in signature_specs(cfg).items():
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name=signature))
        for name, s in spec["inputs"].items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(np.zeros(concrete(s["shape"]), s["dtype"])))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def check_names(cfg: TrainConfig):
    """Label names are output names beside the state names: ConfigError when they clash."""
    clash = sorted(set(cfg.inputs.label_names) & set(state_units(cfg)))
    if clash:
        raise ConfigError(f"label names {clash} clash with the exported state names {list(state_units(cfg))}; "
                          f"labels: {list(cfg.inputs.label_names)}")


def export_run(run_dir: str, export_dir: str, checkpoint: str = "best", version: int | None = None) -> str:
    """Exports ``checkpoint`` ('best' or 'last') of the run in ``run_dir`` to
    ``export_dir/<version>/`` (the next integer after the versions there, or ``version``) and
    returns that path.

    ConfigError when ``export_dir`` is a file or under one, the version exists (it is left
    untouched), the run has no such checkpoint or its configuration cannot be exported;
    DataError for a damaged checkpoint or metadata.
    Nothing is visible at the version's path until the export is complete.
    """
    try:
        import tensorflow_serving.apis  # noqa: F401, PLC0415 - writes the warm-up requests
    except ImportError as e:
        raise ConfigError(f"exporting needs tensorflow-serving-api: pip install '.[serving]' ({e})") from e
    run_lib.check_dir(export_dir, "export directory")
    cfg = run_lib.load_config(run_dir)
    run_lib.checkpoint_path(run_dir, checkpoint)  # ValueError for a checkpoint name other than best/last
    check_names(cfg)
    if version is None:
        version = max(versions(export_dir), default=FIRST_VERSION - 1) + 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ConfigError(f"version must be a non-negative integer. Received: version={version!r}")
    target = os.path.join(export_dir, str(version))
    if os.path.exists(target):
        raise ConfigError(f"{target} exists: version {version} was exported already; choose another "
                          f"--version or leave it out for the next one ({max(versions(export_dir)) + 1})")
    description = run_description(cfg, run_dir, checkpoint)
    model = run_lib.load_checkpoint(run_dir, checkpoint)
    archive = build_archive(model, cfg)
    run_lib.makedirs(export_dir, "export directory")
    # Not tempfile.mkdtemp: its 0700 would keep a server running as another user out.
    partial = os.path.join(export_dir, f"{PARTIAL_PREFIX}{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with run_lib.atomic_dir(target, partial):
        _write_version(partial, archive, cfg, description)
    return target


def _write_version(path: str, archive, cfg: TrainConfig, description: dict):
    """The SavedModel, the warm-up requests and the description, into the (temporary) ``path``."""
    import tensorflow as tf  # noqa: PLC0415

    archive.write_out(path, verbose=False)
    extra = os.path.join(path, ASSETS_EXTRA)
    os.makedirs(extra)
    with tf.io.TFRecordWriter(os.path.join(extra, WARMUP_FILE)) as writer:
        for log in warmup_requests(cfg):
            writer.write(log.SerializeToString())
    with open(os.path.join(extra, DESCRIPTION_FILE), "w") as f:
        json.dump(description, f, indent=2)


def define_flags():
    """The command line's flags, defined only when this module runs as a program, so importing
    ``export_run`` defines none (they would clash with eval.py's ``--run_dir``)."""
    from absl import flags  # noqa: PLC0415

    flags.DEFINE_string("run_dir", None, "The training run to export.")
    flags.DEFINE_enum("checkpoint", "best", list(run_lib.CHECKPOINT_FILES), "Which checkpoint of the run.")
    flags.DEFINE_string("export_dir", None, "TF Serving's model base path: versions go in numbered folders.")
    flags.DEFINE_integer("version", None, "The version to write (default: the next integer).", lower_bound=0)
    flags.mark_flags_as_required(["run_dir", "export_dir"])


def main(argv):
    from absl import app, flags, logging  # noqa: PLC0415

    from emotion_e2e.errors import DataError  # noqa: PLC0415

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    if not f["verbosity"].present:  # TF's SavedModel writer logs every step at INFO
        logging.set_verbosity(logging.WARNING)
    try:
        path = export_run(f.run_dir, f.export_dir, checkpoint=f.checkpoint, version=f.version)
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")
    print(f"exported {f.run_dir} ({f.checkpoint}) to {path}")


if __name__ == "__main__":
    from absl import app

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    define_flags()
    app.run(main)
