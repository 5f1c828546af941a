r"""Side-by-side dev scores of several evaluated runs (the demo's closing table).

  python -m emotion_e2e.compare runs/demo_audio runs/demo_face runs/demo_multimodal

Reads each run's ``eval/{partition}/report.json`` written by ``eval.py``.
"""

from __future__ import annotations

import json
import os
import sys

import tensorflow as tf
from absl import app, flags

from emotion_e2e import run_dir as run_lib
from emotion_e2e.errors import ConfigError, DataError

_PARTITION = flags.DEFINE_string("partition", "dev", "Which evaluation of the runs to compare.")


def comparison_table(run_dirs, partition: str) -> str:
    rows, names = [], None
    for run in run_dirs:
        path = run_lib.report_path(run, partition)
        if not tf.io.gfile.exists(path):
            raise ConfigError(f"{path} not found: run eval.py --run_dir={run} --partition={partition} first")
        try:
            with tf.io.gfile.GFile(path) as f:
                scores = json.load(f)["scores"]["partition"]
        except (ValueError, KeyError) as e:
            raise DataError(f"{path} is not an evaluation report with scores ({type(e).__name__}: {e}); "
                            f"is {partition} labelled? Re-run eval.py --run_dir={run}") from e
        names = names or [k for k in scores["ccc"] if k != "mean"]
        modalities = "+".join(run_lib.load_config(run).inputs.modalities)
        rows.append((os.path.basename(os.path.normpath(run)), modalities, scores))
    head = f"{'run':<22}{'modalities':<14}" + "".join(f"{'CCC ' + n:>14}" for n in names) + f"{'CCC mean':>12}"
    lines = [f"{partition} partition, whole-partition CCC", head]
    for run, modalities, s in rows:
        lines.append(f"{run:<22}{modalities:<14}" + "".join(_cell(s["ccc"].get(n), 14) for n in names)
                     + _cell(s["ccc"]["mean"], 12))
    return "\n".join(lines)


def _cell(value, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("give one or more run directories")
    try:
        print(comparison_table(argv[1:], _PARTITION.value))
    except ValueError as e:  # ConfigError and DataError
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main)
