"""Evaluation (SPEC "Evaluation"): predict every recording of a partition completely and in
order, then score the whole partition and each recording.

Scores are CCC (the AVEC measure), Pearson correlation and RMSE per label dimension, plus
their mean over dimensions; the partition score is computed on the concatenation of all its
recordings, not averaged over recordings.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np

from emotion_e2e.config import ReaderConfig
from emotion_e2e.data import reader, schema
from emotion_e2e.errors import DataError
from emotion_e2e.models.model import INPUT_NAMES

@dataclasses.dataclass
class Predictions:
    """One recording's frames in order: ``pred`` and ``gold`` are ``(num_frames, dims)``."""

    frame: np.ndarray
    pred: np.ndarray
    gold: np.ndarray | None


def predict_partition(model: keras.Model, file_pattern: str, cfg: ReaderConfig,
                      modalities, label_names) -> dict[str, Predictions]:
    """Runs ``model`` over every frame of every recording matching ``file_pattern``."""
    ds = reader.make_dataset(file_pattern, cfg, training=False)
    parts: dict[str, list] = {}
    for b in ds:
        out = model.predict_on_batch({INPUT_NAMES[m]: b[INPUT_NAMES[m]] for m in modalities})
        pred = np.stack([np.asarray(out[n], np.float64) for n in label_names], axis=-1)
        mask = b["mask"].numpy() > 0
        for j, rid in enumerate(b["recording_id"].numpy()):
            keep = mask[j]
            gold = b["labels"].numpy()[j][keep].astype(np.float64) if "labels" in b else None
            parts.setdefault(rid.decode(), []).append((b["frame"].numpy()[j][keep], pred[j][keep], gold))
    result = {}
    for rid, chunks in parts.items():
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


def format_table(report: dict, label_names, title: str) -> str:
    cols = [*label_names, "mean"]
    lines = [title, f"{'':<20}" + "".join(f"{c:>10}" for c in cols)]

    def rows(name, s):
        for key in ("ccc", "pcc", "rmse"):
            lines.append(f"{name + ' ' + key.upper():<20}" + "".join(f"{s[key][c]:>10.3f}" for c in cols))

    rows("partition", report["partition"])
    for rid, s in report["recordings"].items():
        lines.append(f"{rid:<20}" + "".join(f"{s['ccc'][c]:>10.3f}" for c in cols) + "   (CCC)")
    return "\n".join(lines)


def write_predictions(preds: dict[str, Predictions], label_names, frame_step: float, out_dir: str):
    """One CSV per recording: time, then pred_<name> and gold_<name> per dimension."""
    os.makedirs(out_dir, exist_ok=True)
    for rid, p in preds.items():
        cols = {"time": p.frame * frame_step}
        for d, n in enumerate(label_names):
            cols[f"pred_{n}"] = p.pred[:, d]
            if p.gold is not None:
                cols[f"gold_{n}"] = p.gold[:, d]
        header = ",".join(cols)
        np.savetxt(os.path.join(out_dir, f"{rid}.csv"), np.stack(list(cols.values()), 1), delimiter=",",
                   header=header, comments="", fmt="%.6g")


def plot_predictions(preds: dict[str, Predictions], label_names, frame_step: float, out_dir: str):
    """One PNG per recording: prediction against gold over time, a panel per dimension."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    os.makedirs(out_dir, exist_ok=True)
    for rid, p in preds.items():
        t = p.frame * frame_step
        fig, axes = plt.subplots(len(label_names), 1, figsize=(10, 2.2 * len(label_names)), sharex=True,
                                 squeeze=False)
        for d, (ax, n) in enumerate(zip(axes[:, 0], label_names)):
            if p.gold is not None:
                ax.plot(t, p.gold[:, d], color="black", lw=1.2, label="gold")
            ax.plot(t, p.pred[:, d], color="tab:red", lw=1.0, label="prediction")
            ax.set_ylabel(n)
            ax.grid(alpha=0.3)
        axes[0, 0].set_title(rid)
        axes[0, 0].legend(loc="upper right", fontsize=8)
        axes[-1, 0].set_xlabel("time (s)")
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, f"{rid}.png"), dpi=80)
        plt.close(fig)


def evaluate_run(run_dir: str, *, partition: str | None = None, checkpoint: str = "best",
                 output_dir: str | None = None, postprocess: bool = False, plots: bool = True,
                 batch_size: int | None = None) -> dict:
    """Rebuilds a run's model from its directory alone and evaluates one partition.

    Writes ``report.json``, ``predictions/{recording}.csv`` and ``plots/{recording}.png`` to
    ``output_dir`` (default ``run_dir/eval/{partition}``) and returns the report. With
    ``postprocess`` the AVEC post-processing is fitted on the run's dev partition and applied
    unchanged to ``partition``; the report then holds the scores before and after.
    """
    import json  # noqa: PLC0415

    from emotion_e2e import training  # noqa: PLC0415
    from emotion_e2e.data import metadata  # noqa: PLC0415

    cfg = training.load_run_config(run_dir)
    partition = partition or cfg.eval_partition
    ckpt = training.checkpoint_path(run_dir, checkpoint)
    if not os.path.exists(ckpt):
        raise training.ConfigError(f"{ckpt} not found: has the run in {run_dir} finished an epoch?")
    meta = metadata.read(cfg.data_dir)
    if partition not in meta["partitions"]:
        raise training.ConfigError(f"partition {partition!r} not in {cfg.data_dir}: {sorted(meta['partitions'])}")
    labelled = meta["partitions"][partition]["labelled"]
    names, modalities = cfg.model.label_names, cfg.model.modalities
    rcfg = dataclasses.replace(cfg.reader, label_names=names if labelled else (),
                               batch_size=batch_size or cfg.reader.batch_size, augment=None)
    from emotion_e2e.models import load_model  # noqa: PLC0415

    model = load_model(ckpt)
    pattern = lambda part: schema.partition_pattern(cfg.data_dir, part)  # noqa: E731
    preds = predict_partition(model, pattern(partition), rcfg, modalities, names)
    output_dir = output_dir or os.path.join(run_dir, "eval", partition)
    report = {"run_dir": run_dir, "checkpoint": ckpt, "partition": partition}
    if labelled:
        report["scores"] = partition_report(preds, names)
    if postprocess:
        from emotion_e2e.postprocess import PostProcessor  # noqa: PLC0415

        dev = preds if partition == cfg.eval_partition else predict_partition(
            model, pattern(cfg.eval_partition), dataclasses.replace(rcfg, label_names=names), modalities, names)
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
    with open(os.path.join(output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report
