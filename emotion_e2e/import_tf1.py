r"""Imports a checkpoint of the authors' TF1 graph as a run directory (docs/design.md §11).

  python -m emotion_e2e.import_tf1 --checkpoint=PATH/model.ckpt-N --modalities=audio,video --run_dir=OUT \
      [--data_dir=tfrecords/recola] [--label_names=arousal,valence]

Reads the checkpoint with ``tf.train.load_checkpoint`` and writes ``OUT`` as training would lay
it out (``emotion_e2e.run_dir``): ``config.json`` and ``checkpoints/best.keras`` and
``last.keras`` (the same model), so ``eval.py --run_dir=OUT`` and ``python -m
emotion_e2e.export --run_dir=OUT`` work on it. The model is built with the authors'
configuration (the defaults of ``ModelConfig``); the LSTMs' number and width are read from
the checkpoint's shapes.

Every variable of their graph is mapped onto one or more weights of the model (the table in
docs/design.md §11), and every weight of the model receives a variable. What a training
checkpoint holds beside the model is ignored on purpose:

- names ending in ``/Adam`` or ``/Adam_1`` (Adam's slots),
- ``beta1_power``, ``beta2_power`` (Adam's decay powers) and ``global_step``.

Any other variable the graph does not have, and any variable it needs that the checkpoint
lacks, is one ConfigError listing them all; a variable of the wrong shape is one ConfigError
naming it with both shapes; both before anything is written. The run directory is written
into a hidden folder beside ``OUT`` and renamed when complete; an existing non-empty ``OUT``
is refused.

The LSTM variables of three generations of TF1's RNN code are recognised (their code was
written for TF ≤ 0.12): ``RNN/MultiRNNCell/Cell0/LSTMCell/W_0`` (≤ 0.12),
``rnn/multi_rnn_cell/cell_0/lstm_cell/weights`` (1.0–1.2) and ``.../kernel`` (≥ 1.3).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
import sys
import uuid
from typing import Callable, NamedTuple

from emotion_e2e import run_dir as run_lib
from emotion_e2e.config import LABEL_NAMES, MODALITIES, InputConfig, ModelConfig, RecurrentConfig, TrainConfig
from emotion_e2e.errors import ConfigError, DataError

# The authors call the face modality "video" (their --model=audio|video|both); both names are
# accepted here, and nowhere else.
MODALITY_NAMES = {"audio": "audio", "face": "face", "video": "face"}
SCOPES = {"audio": "audio_model", "face": "video_model"}  # their variable scope of each feature network
AUTHORS_MODALITY = {"audio": "audio", "face": "video"}
IGNORED_SUFFIXES = ("/Adam", "/Adam_1")
IGNORED_NAMES = ("beta1_power", "beta2_power", "global_step")

# Our audio network's conv blocks and the scopes slim gave their convolutions.
AUDIO_SCOPES = {"conv1": "Conv", "conv2": "Conv_1"}
# Keras' BatchNormalization attributes carry slim's variable names.
BATCH_NORM_VARIABLES = ("beta", "gamma", "moving_mean", "moving_variance")
HEAD_SCOPE = "fully_connected"  # slim.layers.linear(net, len(labels))


class LSTMNames(NamedTuple):
    """The names of one generation of TF1's LSTM variables; ``cell`` takes the 0-based layer ``k``.
    The peepholes are listed in the order of PeepholeLSTM's ``w_ci, w_cf, w_co``."""

    cell: str
    kernel: str
    bias: str
    peepholes: tuple[str, str, str]


LSTM_GENERATIONS = {
    "TF >= 1.3": LSTMNames("rnn/multi_rnn_cell/cell_{k}/lstm_cell", "kernel", "bias",
                           ("w_i_diag", "w_f_diag", "w_o_diag")),
    "TF 1.0-1.2": LSTMNames("rnn/multi_rnn_cell/cell_{k}/lstm_cell", "weights", "biases",
                            ("w_i_diag", "w_f_diag", "w_o_diag")),
    "TF <= 0.12": LSTMNames("RNN/MultiRNNCell/Cell{k}/LSTMCell", "W_0", "B", ("W_I_diag", "W_F_diag", "W_O_diag")),
}


@dataclasses.dataclass(frozen=True)
class Mapped:
    """One checkpoint variable: its ``name``, the ``shape`` the model needs it to have, the model's
    ``weights`` it fills and ``split``, which cuts the variable's value into one array per weight."""

    name: str
    shape: tuple[int, ...]
    weights: tuple
    split: Callable = lambda value: [value]


def modalities_from_flag(names) -> tuple[str, ...]:
    """``--modalities`` (ours or the authors' names) → ours in the model's order (audio first, as
    their concatenation); ConfigError for anything else."""
    unknown = [n for n in names if n not in MODALITY_NAMES]
    ours = {MODALITY_NAMES[n] for n in names if n in MODALITY_NAMES}
    if unknown or not ours or len(ours) != len(names):
        raise ConfigError(f"--modalities takes audio and/or face (or the authors' name video), each once. "
                          f"Received: --modalities={','.join(names)}")
    return tuple(m for m in MODALITIES if m in ours)


def check_run_dir(run_dir: str):
    """ConfigError unless ``run_dir`` is free: absent or an empty directory."""
    if os.path.exists(run_dir) and not (os.path.isdir(run_dir) and not os.listdir(run_dir)):
        raise ConfigError(f"--run_dir={run_dir} exists and is not an empty directory; choose a new one")


def open_checkpoint(path: str):
    """``tf.train.load_checkpoint(path)``; DataError naming ``path`` when it cannot be read."""
    import tensorflow as tf  # noqa: PLC0415

    try:
        return tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataError(f"{path} is not a readable TF1 checkpoint (expected PATH/model.ckpt-N, the prefix of "
                        f"its .index and .data files): {type(e).__name__}: {first}") from e


def split_ignored(shapes: dict) -> tuple[dict, list[str]]:
    """The checkpoint's ``{name: shape}`` without the training state, and the ignored names."""
    ignored = {n for n in shapes if n.endswith(IGNORED_SUFFIXES) or n in IGNORED_NAMES}
    return {n: tuple(s) for n, s in shapes.items() if n not in ignored}, sorted(ignored)


def lstm_generation(names) -> str:
    """The generation of TF1's RNN code that named the checkpoint's LSTM variables (the newest
    when none of them has a first layer: the missing names are then reported in the newest)."""
    for generation, lstm in LSTM_GENERATIONS.items():
        if f"{lstm.cell.format(k=0)}/{lstm.kernel}" in names:
            return generation
    return next(iter(LSTM_GENERATIONS))


def recurrent_config(shapes: dict, lstm: LSTMNames) -> RecurrentConfig:
    """The authors' LSTMs, their number and width read from the checkpoint: layers ``cell_0``,
    ``cell_1``, … up to the first missing one, units a quarter of the first bias (the defaults
    when there is none; the mapping then reports the missing variables)."""
    from emotion_e2e.models.recurrent import GATES  # noqa: PLC0415

    layers = 0
    while f"{lstm.cell.format(k=layers)}/{lstm.kernel}" in shapes:
        layers += 1
    bias = shapes.get(f"{lstm.cell.format(k=0)}/{lstm.bias}")
    default = RecurrentConfig()
    if not layers or not bias or bias[0] % GATES:
        return default
    return dataclasses.replace(default, layers=layers, units=bias[0] // GATES)


def train_config(modalities, label_names, data_dir: str, recurrent: RecurrentConfig) -> TrainConfig:
    """The run's configuration: the authors' model (``ModelConfig``'s defaults) with ``recurrent``,
    for ``modalities`` and ``label_names`` (their head's columns, in order) on the default 640
    samples per frame and 96-pixel faces their graph reshapes to."""
    try:
        return TrainConfig(data_dir=data_dir, inputs=InputConfig(modalities=modalities, label_names=label_names),
                           model=ModelConfig(recurrent=recurrent))
    except ValueError as e:
        raise ConfigError(str(e)) from e


def check_data(cfg: TrainConfig):
    """ConfigError when ``cfg.data_dir``'s records do not fit the authors' graph; DataError for a
    damaged metadata.json. Nothing to check without a data directory."""
    if not cfg.data_dir:
        return
    from emotion_e2e.data import metadata  # noqa: PLC0415

    meta, inputs = metadata.read(cfg.data_dir), cfg.inputs
    missing = [m for m in inputs.modalities if m not in meta["modalities"]]
    sizes = (meta["samples_per_frame"], meta["face"]["size"] if "face" in inputs.modalities else inputs.face_size)
    if missing or sizes != (inputs.samples_per_frame, inputs.face_size):
        raise ConfigError(f"{cfg.data_dir} holds {','.join(meta['modalities'])} with {meta['samples_per_frame']} "
                          f"samples per frame and {meta['face']['size']}-pixel faces; the authors' graph reads "
                          f"{','.join(inputs.modalities)} with {inputs.samples_per_frame} samples per frame and "
                          f"{inputs.face_size}-pixel faces")
    labels = metadata.label_names(meta, cfg.eval_partition) if cfg.eval_partition in meta["partitions"] else ()
    if labels and any(n not in labels for n in inputs.label_names):
        raise ConfigError(f"--label_names={','.join(inputs.label_names)} but partition {cfg.eval_partition!r} of "
                          f"{cfg.data_dir} has labels {list(labels)}")


def batch_norm_mapping(scope: str, layer) -> list[Mapped]:
    """``<scope>/{beta,gamma,moving_mean,moving_variance}`` → the Keras batch norm ``layer``."""
    return [Mapped(f"{scope}/{v}", tuple(getattr(layer, v).shape), (getattr(layer, v),))
            for v in BATCH_NORM_VARIABLES]


def audio_mapping(network) -> list[Mapped]:
    """``audio_model/Conv{,_1}/...`` → the conv blocks of ``audio_network``. Slim's conv2d kernel
    is (1, width, in, out); Keras' Conv1D keeps (width, in, out)."""
    mapped = []
    for block, scope in AUDIO_SCOPES.items():
        scope = f"{SCOPES['audio']}/{scope}"
        kernel = network.get_layer(f"{block}_conv").kernel
        mapped.append(Mapped(f"{scope}/weights", (1, *kernel.shape), (kernel,), lambda value: [value[0]]))
        mapped += batch_norm_mapping(f"{scope}/BatchNorm", network.get_layer(f"{block}_bn"))
    return mapped


def face_mapping(network) -> list[Mapped]:
    """``video_model/resnet_v1_50/...`` → the slim ResNet-v1-50 backbone of ``face_network``,
    whose layers carry slim's scopes (``models.face.slim_variable_names``; HWIO kernels in both)."""
    from emotion_e2e.models.face import BACKBONE_NAME, slim_variable_names  # noqa: PLC0415

    return [Mapped(f"{SCOPES['face']}/{name}", tuple(weight.shape), (weight,))
            for layer in network.get_layer(BACKBONE_NAME).layers if layer.weights
            for name, weight in zip(slim_variable_names(layer), layer.weights)]


def lstm_mapping(model, cfg: RecurrentConfig, lstm: LSTMNames) -> list[Mapped]:
    """Layer ``k`` of ``MultiRNNCell`` → ``lstm_{k+1}``. TF1's kernel multiplies the concatenation
    ``[x, h]``: its first rows are our ``kernel``, the last ``units`` our ``recurrent_kernel``
    (the gates i, j, f, o side by side in both)."""
    from emotion_e2e.models.recurrent import PEEPHOLES  # noqa: PLC0415

    mapped = []
    for k in range(cfg.layers):
        layer, scope = model.get_layer(f"lstm_{k + 1}"), lstm.cell.format(k=k)  # a PeepholeLSTM
        inputs = layer.kernel.shape[0]
        mapped.append(Mapped(f"{scope}/{lstm.kernel}", (inputs + cfg.units, layer.kernel.shape[1]),
                             (layer.kernel, layer.recurrent_kernel), lambda value, n=inputs: [value[:n], value[n:]]))
        mapped.append(Mapped(f"{scope}/{lstm.bias}", tuple(layer.bias.shape), (layer.bias,)))
        mapped += [Mapped(f"{scope}/{name}", tuple(getattr(layer, w).shape), (getattr(layer, w),))
                   for name, w in zip(lstm.peepholes, PEEPHOLES)]
    return mapped


def head_mapping(model, label_names) -> list[Mapped]:
    """``fully_connected/{weights,biases}``: column ``j`` is label ``j`` → ``head_<label>``."""
    layers = [model.get_layer(f"head_{n}") for n in label_names]
    units = layers[0].kernel.shape[0]
    columns = lambda value: [value[..., j:j + 1] for j in range(len(layers))]  # noqa: E731
    return [Mapped(f"{HEAD_SCOPE}/weights", (units, len(layers)), tuple(x.kernel for x in layers), columns),
            Mapped(f"{HEAD_SCOPE}/biases", (len(layers),), tuple(x.bias for x in layers), columns)]


def variable_mapping(model, cfg: TrainConfig, lstm: LSTMNames) -> list[Mapped]:
    """Every variable of the authors' graph for ``cfg`` and where it goes in ``model`` (built by
    ``build_model(cfg.model, cfg.inputs)``). ValueError when a weight of the model would be
    left out or filled twice: the mapping and the model builders disagree."""
    from emotion_e2e.models import feature_network  # noqa: PLC0415

    mapped = []
    if "audio" in cfg.inputs.modalities:
        mapped += audio_mapping(feature_network(model, "audio"))
    if "face" in cfg.inputs.modalities:
        mapped += face_mapping(feature_network(model, "face"))
    mapped += lstm_mapping(model, cfg.model.recurrent, lstm) + head_mapping(model, cfg.inputs.label_names)
    filled = collections.Counter(id(w) for m in mapped for w in m.weights)
    not_once = [w.path for w in model.weights if filled[id(w)] != 1]
    if not_once or filled.total() != len(model.weights):
        raise ValueError(f"the TF1 mapping must fill every weight of {model.name!r} once; it fills "
                         f"{filled.total()} for {len(model.weights)} weights, these not once: {not_once}")
    return mapped


def check_variables(mapped: list[Mapped], shapes: dict, cfg: TrainConfig, checkpoint: str):
    """One ConfigError listing every variable missing from the checkpoint and every one it has
    beyond the graph's; then one naming every variable of the wrong shape with both shapes."""
    wanted = {m.name: m.shape for m in mapped}
    missing, extra = sorted(set(wanted) - set(shapes)), sorted(set(shapes) - set(wanted))
    graph = "+".join(AUTHORS_MODALITY[m] for m in cfg.inputs.modalities)
    if missing or extra:
        parts = [f"{len(missing)} variables of the graph are missing: {', '.join(missing)}"] if missing else []
        parts += [f"{len(extra)} variables are not in the graph: {', '.join(extra)}"] if extra else []
        held = [AUTHORS_MODALITY[m] for m in MODALITIES if any(n.startswith(f"{SCOPES[m]}/") for n in shapes)]
        hint = (f" (the checkpoint holds the {'+'.join(held)} networks: --modalities={','.join(held)}?)"
                if held and held != [AUTHORS_MODALITY[m] for m in cfg.inputs.modalities] else "")
        raise ConfigError(f"{checkpoint} does not match the authors' {graph} graph{hint}: {'; '.join(parts)}")
    wrong = [f"{n}: checkpoint {shapes[n]}, graph {s}" for n, s in wanted.items() if shapes[n] != s]
    if wrong:
        raise ConfigError(f"{checkpoint} does not match the authors' {graph} graph with labels "
                          f"{','.join(cfg.inputs.label_names)}: wrong shapes: {'; '.join(wrong)}")


def write_run(model, cfg: TrainConfig, run_dir: str):
    """``config.json`` and both checkpoints into a hidden folder beside ``run_dir``, renamed to
    ``run_dir`` when complete (an empty ``run_dir`` is replaced, a non-empty one refused)."""
    run_dir = os.path.normpath(run_dir)
    parent = os.path.dirname(os.path.abspath(run_dir))
    os.makedirs(parent, exist_ok=True)
    partial = os.path.join(parent, f".{os.path.basename(run_dir)}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with run_lib.atomic_dir(run_dir, partial):
        run_lib.save_config(partial, cfg)
        best = run_lib.checkpoint_path(partial, "best")
        os.makedirs(os.path.dirname(best))
        model.save(best)
        shutil.copyfile(best, run_lib.checkpoint_path(partial, "last"))


def import_checkpoint(checkpoint: str, modalities, run_dir: str, label_names=LABEL_NAMES,
                      data_dir: str = "") -> dict:
    """Writes the run directory ``run_dir`` whose model computes what the authors' graph with
    ``modalities`` (ours or theirs: audio, face / video) computes with the weights of ``checkpoint``;
    ``label_names`` name their head's columns in order; ``data_dir`` is recorded for ``eval.py``.
    Returns a summary: ``{'config', 'lstm_names', 'variables', 'ignored'}``.

    ConfigError / DataError (see the module docstring) before anything is written.
    """
    check_run_dir(run_dir)
    modalities = modalities_from_flag(modalities)
    reader = open_checkpoint(checkpoint)
    shapes, ignored = split_ignored(reader.get_variable_to_shape_map())
    generation = lstm_generation(shapes)
    lstm = LSTM_GENERATIONS[generation]
    cfg = train_config(modalities, tuple(label_names), data_dir, recurrent_config(shapes, lstm))
    check_data(cfg)

    from emotion_e2e.models import build_model  # noqa: PLC0415

    model = build_model(cfg.model, cfg.inputs)
    mapped = variable_mapping(model, cfg, lstm)
    check_variables(mapped, shapes, cfg, checkpoint)
    for m in mapped:
        for weight, value in zip(m.weights, m.split(reader.get_tensor(m.name))):
            weight.assign(value)
    write_run(model, cfg, run_dir)
    return {"config": cfg, "lstm_names": generation, "variables": len(mapped), "ignored": ignored}


def define_flags():
    """The command line's flags, defined only when this module runs as a program."""
    from absl import flags  # noqa: PLC0415

    flags.DEFINE_string("checkpoint", None, "The authors' TF1 checkpoint: PATH/model.ckpt-N.")
    flags.DEFINE_list("modalities", None, "The graph's modalities: audio and/or face. The authors' name video is "
                      "accepted for face: audio, video and audio,video are their --model=audio|video|both.")
    flags.DEFINE_string("run_dir", None, "The run directory to write (absent or empty).")
    flags.DEFINE_string("data_dir", "", "The converted corpus the run is evaluated on (recorded in config.json "
                        "for eval.py, and checked against the graph's inputs).")
    flags.DEFINE_list("label_names", list(LABEL_NAMES), "The names of the columns of the graph's head, in order.")
    flags.mark_flags_as_required(["checkpoint", "modalities", "run_dir"])


def main(argv):
    from absl import app, flags  # noqa: PLC0415

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    try:
        summary = import_checkpoint(f.checkpoint, f.modalities, f.run_dir, label_names=f.label_names,
                                    data_dir=f.data_dir)
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")
    rnn = summary["config"].model.recurrent
    print(f"imported {summary['variables']} variables of {f.checkpoint} ({summary['lstm_names']} LSTM names; "
          f"{len(summary['ignored'])} optimizer and step variables ignored): "
          f"{'+'.join(summary['config'].inputs.modalities)}, {rnn.layers} LSTMs of {rnn.units} → {f.run_dir}")


if __name__ == "__main__":
    from absl import app

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    define_flags()
    app.run(main)
