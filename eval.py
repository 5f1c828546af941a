r"""Evaluates a training run on a partition, from its run directory alone.

  python eval.py --run_dir=runs/demo_multimodal
  python eval.py --run_dir=runs/recola_multimodal --partition=dev --postprocess

Prints CCC, Pearson correlation and RMSE per dimension and their mean, for the whole
partition and per recording; writes report.json, one predictions CSV and one PNG plot per
recording to --output_dir (default RUN_DIR/eval/PARTITION).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from emotion_e2e import config, run_dir
from emotion_e2e.cli import run_cli

_RUN_DIR = flags.DEFINE_string("run_dir", None, "The training run to evaluate.")
_PARTITION = flags.DEFINE_string("partition", None, "Partition to evaluate (default: the run's eval partition).")
_CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", list(run_dir.CHECKPOINT_FILES), "Which checkpoint of the run.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where report, predictions and plots go.")
_POSTPROCESS = flags.DEFINE_bool("postprocess", False, "AVEC post-processing fitted on dev, reported before/after.")
_PLOTS = flags.DEFINE_bool("plots", True, "Write a PNG per recording.")
_BATCH = flags.DEFINE_integer("batch_size", None, "Sequences per prediction batch (default: the run's).")
_EVAL_SEQ_LEN = flags.DEFINE_integer("eval_seq_len", None, "Frames per evaluation window, each starting the LSTMs "
                                     "from zeros (default: the run's --eval_seq_len).")
_STATEFUL = flags.DEFINE_bool("stateful", False, "Carry the LSTM state across the consecutive windows of a "
                              "recording (one window at a time) instead of restarting it every window.")
_STORAGE_TIMEOUT = flags.DEFINE_float("storage_timeout", config.STORAGE_TIMEOUT,
                                      "Seconds the first look-up in a remote run, output or data directory "
                                      "(s3://, gs://, hdfs://...) may take before evaluation stops: the store "
                                      "could not be reached. Local paths are not looked up.")

flags.mark_flag_as_required("run_dir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from emotion_e2e import evaluation  # noqa: PLC0415
    from emotion_e2e.errors import ConfigError, DataError  # noqa: PLC0415

    try:
        report = evaluation.evaluate_run(_RUN_DIR.value, partition=_PARTITION.value, checkpoint=_CHECKPOINT.value,
                                         output_dir=_OUTPUT_DIR.value, postprocess=_POSTPROCESS.value,
                                         plots=_PLOTS.value, batch_size=_BATCH.value,
                                         eval_seq_len=_EVAL_SEQ_LEN.value, stateful=_STATEFUL.value,
                                         storage_timeout=_STORAGE_TIMEOUT.value)
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")
    names = list(report["scores"]["partition"]["ccc"])[:-1] if "scores" in report else []
    if "scores" in report:
        mode = f", {report['eval_seq_len']}-frame windows" + (", stateful" if report["stateful"] else "")
        print(evaluation.format_table(report["scores"], names, f"{report['partition']} ({report['checkpoint']}{mode})"))
    if "scores_postprocessed" in report:
        print(evaluation.format_table(report["scores_postprocessed"], names, "after AVEC post-processing"))
    out = _OUTPUT_DIR.value or run_dir.eval_dir(_RUN_DIR.value, report["partition"])
    print(f"predictions and plots: {out}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_cli(main)
