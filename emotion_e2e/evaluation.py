"""Evaluation (docs/design.md §7): predict every recording of a partition completely and in
order, then score the whole partition and each recording.

Scores are CCC (the AVEC measure), Pearson correlation and RMSE per label dimension, plus
their mean over dimensions; the partition score is computed on the concatenation of all its
recordings, not averaged over recordings.
"""

from __future__ import annotations

import dataclasses
import io
import os

import keras
import numpy as np
import tensorflow as tf

from emotion_e2e import locking
from emotion_e2e import run_dir as run_lib
from emotion_e2e.config import STORAGE_TIMEOUT, InputConfig, ReaderConfig
from emotion_e2e.data import metadata, names, reader, schema
from emotion_e2e.errors import ConfigError, DataError


@dataclasses.dataclass
class Predictions:
    """One recording's frames in order: ``pred`` and ``gold`` are ``(num_frames, dims)``."""

    frame: np.ndarray
    pred: np.ndarray
    gold: np.ndarray | None


def predict_partition(model: keras.Model, file_pattern: str, inputs: InputConfig, cfg: ReaderConfig,
                      label_names, stateful: bool = False) -> dict[str, Predictions]:
    """Runs ``model`` over every frame of every recording matching ``file_pattern``; the reader
    reads ``inputs`` (gold labels when ``inputs.label_names`` is not empty), the model
    predicts ``label_names``. A truncated or corrupt shard raises a DataError naming it.

    Windows of ``cfg.seq_len`` frames are predicted independently, each LSTM starting from
    zeros; with ``stateful`` they are predicted one at a time in order, each starting from the
    state the previous window of its recording ended in, which equals predicting each recording
    whole (``models.inference.with_recurrent_state``).
    """
    if stateful:
        from emotion_e2e.models.inference import with_recurrent_state  # noqa: PLC0415

        model = with_recurrent_state(model)
        cfg = dataclasses.replace(cfg, batch_size=1)  # a window's state is the previous window's
    states = [n for n in model.input if n not in inputs.modalities] if isinstance(model.input, dict) else []
    state: dict = {}
    ds = reader.make_dataset(file_pattern, inputs, cfg, training=False)
    parts: dict[str, list] = {}
    batches = iter(ds)
    while True:
        try:
            b = next(batches)
        except StopIteration:
            break
        except tf.errors.OpError as e:
            error = reader.data_error(e)
            if error is None:
                raise
            raise error from None
        x = {m: b[m] for m in inputs.modalities}
        if states:
            if int(b["frame"][0, 0]) == 1:  # a recording starts: zero state
                state = {n: np.zeros((1, model.input[n].shape[-1]), np.float32) for n in states}
            out = model.predict_on_batch({**x, **state})
            state = {n: out[n] for n in states}
        else:
            out = model.predict_on_batch(x)
        pred = np.stack([np.asarray(out[n], np.float64) for n in label_names], axis=-1)
        mask = b["mask"].numpy() > 0
        for j, rid in enumerate(b["recording_id"].numpy()):
            keep = mask[j]
            gold = b["labels"].numpy()[j][keep].astype(np.float64) if "labels" in b else None
            parts.setdefault(rid.decode(), []).append((b["frame"].numpy()[j][keep], pred[j][keep], gold))
    result = {}
    for rid, chunks in parts.items():
        names.check_recording_id(rid, f"TFRecord files {file_pattern}")  # it names the files evaluation writes
        frame = np.concatenate([c[0] for c in chunks])
        if not np.array_equal(frame, np.arange(1, len(frame) + 1)):
            raise DataError(f"recording {rid}: predicted frames are not 1..{len(frame)} in order")
        gold = None if chunks[0][2] is None else np.concatenate([c[2] for c in chunks])
        result[rid] = Predictions(frame, np.concatenate([c[1] for c in chunks]), gold)
    return result


def scores(pred: np.ndarray, gold: np.ndarray, label_names) -> dict:
    """``{'ccc': {name: v, ..., 'mean': v}, 'pcc': {...}, 'rmse': {...}}`` for ``(frames, dims)`` arrays."""
    from emotion_e2e.metrics import ccc_np, pearson_np, rmse_np  # noqa: PLC0415

    out = {}
    for key, fn in (("ccc", ccc_np), ("pcc", pearson_np), ("rmse", rmse_np)):
        per = {n: float(fn(pred[:, d], gold[:, d])) for d, n in enumerate(label_names)}
        per["mean"] = float(np.mean(list(per.values())))
        out[key] = per
    return out


def partition_report(preds: dict[str, Predictions], label_names) -> dict:
    """Whole-partition scores (on the concatenation) and per-recording scores."""
    rids = sorted(preds)
    pred = np.concatenate([preds[r].pred for r in rids])
    gold = np.concatenate([preds[r].gold for r in rids])
    return {"partition": scores(pred, gold, label_names),
            "recordings": {r: scores(preds[r].pred, preds[r].gold, label_names) for r in rids}}


def _cell(value) -> str:
    """A score in a table column; an undefined one (NaN, or None from JSON) shows as ``-``."""
    return f"{'-':>10}" if value is None or not np.isfinite(value) else f"{value:>10.3f}"


def format_table(report: dict, label_names, title: str) -> str:
    cols = [*label_names, "mean"]
    lines = [title, f"{'':<20}" + "".join(f"{c:>10}" for c in cols)]

    def rows(name, s):
        for key in ("ccc", "pcc", "rmse"):
            lines.append(f"{name + ' ' + key.upper():<20}" + "".join(_cell(s[key][c]) for c in cols))

    rows("partition", report["partition"])
    for rid, s in report["recordings"].items():
        lines.append(f"{rid:<20}" + "".join(_cell(s["ccc"][c]) for c in cols) + "   (CCC)")
    return "\n".join(lines)


def write_predictions(preds: dict[str, Predictions], label_names, frame_step: float, out_dir: str):
    """One CSV per recording, ``out_dir/{recording}.csv`` (DataError for an id that would leave
    ``out_dir``): time, then pred_<name> and gold_<name> per dimension."""
    paths = {rid: names.file_in(out_dir, f"{rid}.csv") for rid in preds}  # all checked before any is written
    tf.io.gfile.makedirs(out_dir)
    for rid, p in preds.items():
        cols = {"time": p.frame * frame_step}
        for d, n in enumerate(label_names):
            cols[f"pred_{n}"] = p.pred[:, d]
            if p.gold is not None:
                cols[f"gold_{n}"] = p.gold[:, d]
        text = io.StringIO()
        np.savetxt(text, np.stack(list(cols.values()), 1), delimiter=",", header=",".join(cols), comments="",
                   fmt="%.6g")
        run_lib.write_file(paths[rid], text.getvalue())


def plot_predictions(preds: dict[str, Predictions], label_names, frame_step: float, out_dir: str):
    """One PNG per recording, ``out_dir/{recording}.png`` (DataError for an id that would leave
    ``out_dir``): prediction against gold over time, a panel per dimension."""
    from emotion_e2e.plots import plot_traces  # noqa: PLC0415

    paths = {rid: names.file_in(out_dir, f"{rid}.png") for rid in preds}
    tf.io.gfile.makedirs(out_dir)
    for rid, p in preds.items():
        gold = None if p.gold is None else {n: p.gold[:, d] for d, n in enumerate(label_names)}
        plot_traces(paths[rid], rid, p.frame * frame_step,
                    {n: p.pred[:, d] for d, n in enumerate(label_names)}, gold=gold)


def evaluate_run(run_dir: str, *, partition: str | None = None, checkpoint: str = "best",
                 output_dir: str | None = None, postprocess: bool = False, plots: bool = True,
                 batch_size: int | None = None, eval_seq_len: int | None = None, stateful: bool = False,
                 storage_timeout: float = STORAGE_TIMEOUT) -> dict:
    """Rebuilds a run's model from its directory alone and evaluates one partition.

    Writes ``report.json`` (strict JSON: an undefined score is ``null``),
    ``predictions/{recording}.csv`` and ``plots/{recording}.png`` to ``output_dir`` (default
    ``run_dir.eval_dir(run_dir, partition)``) and returns the report. With ``postprocess`` the AVEC
    post-processing is fitted on the run's dev partition and applied unchanged to ``partition``;
    the report then holds the scores before and after. Windows are ``eval_seq_len`` frames
    (default: the run's). With ``stateful`` the LSTM state is carried across the consecutive
    windows of a recording (``predict_partition``). The first look-up in a remote run, output or
    data directory may take ``storage_timeout`` seconds (``run_dir.wait_for_storage``).
    Holds the lock of ``output_dir`` (``emotion_e2e.locking``): a second evaluation into it is refused with a ConfigError.
    """
    run_lib.wait_for_storage(run_dir, output_dir, timeout=storage_timeout)
    cfg = run_lib.load_config(run_dir)
    run_lib.wait_for_storage(cfg.data_dir, timeout=storage_timeout)
    partition = partition or cfg.eval_partition
    meta = metadata.read(cfg.data_dir)
    if partition not in meta["partitions"]:
        raise ConfigError(f"partition {partition!r} not in {cfg.data_dir}: {sorted(meta['partitions'])}")
    needed = [partition] + ([cfg.eval_partition] if postprocess else [])
    metadata.verify(cfg.data_dir, meta, needed)
    model = run_lib.load_checkpoint(run_dir, checkpoint)
    output_dir = output_dir or run_lib.eval_dir(run_dir, partition)
    # One evaluation per output folder at a time; training the run meanwhile is fine (it reads best.keras,
    # which training replaces atomically).
    with locking.hold(output_dir, ConfigError, "evaluation folder", "another --output_dir"):
        return _evaluate(model, run_dir, cfg, meta, partition, checkpoint, output_dir, postprocess, plots,
                         batch_size, eval_seq_len, stateful)


def _evaluate(model: keras.Model, run_dir: str, cfg, meta: dict, partition: str, checkpoint: str, output_dir: str,
              postprocess: bool, plots: bool, batch_size: int | None, eval_seq_len: int | None,
              stateful: bool) -> dict:
    """``evaluate_run`` with the run's ``model`` loaded and its output folder locked."""
    names = cfg.inputs.label_names
    labelled = bool(metadata.label_names(meta, partition))
    rcfg = cfg.reader.for_evaluation(batch_size=batch_size, eval_seq_len=eval_seq_len)
    gold_inputs = cfg.inputs
    read_inputs = gold_inputs if labelled else dataclasses.replace(gold_inputs, label_names=())
    pattern = lambda part: schema.partition_pattern(cfg.data_dir, part)  # noqa: E731
    preds = predict_partition(model, pattern(partition), read_inputs, rcfg, names, stateful=stateful)
    report = {"run_dir": run_dir, "checkpoint": run_lib.checkpoint_path(run_dir, checkpoint), "partition": partition,
              "eval_seq_len": rcfg.seq_len, "stateful": stateful}
    if labelled:
        report["scores"] = partition_report(preds, names)
    if postprocess:
        from emotion_e2e.postprocess import PostProcessor  # noqa: PLC0415

        dev = preds if partition == cfg.eval_partition else predict_partition(
            model, pattern(cfg.eval_partition), gold_inputs, rcfg, names, stateful=stateful)
        train_stats = meta["partitions"][cfg.train_partition]["labels"]
        post = PostProcessor.fit({r: p.pred for r, p in dev.items()}, {r: p.gold for r, p in dev.items()},
                                 np.array([train_stats[n]["std"] for n in names]),
                                 train_label_mean=np.array([train_stats[n]["mean"] for n in names]))
        adjusted = post.apply({r: p.pred for r, p in preds.items()})
        preds = {r: Predictions(p.frame, adjusted[r], p.gold) for r, p in preds.items()}
        report["postprocess"] = post.to_dict()
        if labelled:
            report["scores_postprocessed"] = partition_report(preds, names)
    frame_step = meta["time_base"]["frame_step"]
    write_predictions(preds, names, frame_step, os.path.join(output_dir, "predictions"))
    if plots:
        plot_predictions(preds, names, frame_step, os.path.join(output_dir, "plots"))
    run_lib.write_json(os.path.join(output_dir, run_lib.REPORT), report)
    return report
