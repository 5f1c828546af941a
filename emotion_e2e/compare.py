r"""Side-by-side dev scores of several evaluated runs (the demo's closing table).

  python -m emotion_e2e.compare runs/demo_audio runs/demo_visual runs/demo_multimodal

Reads each run's ``eval/{partition}/report.json`` written by ``eval.py``.
"""

from __future__ import annotations

import json
import os
import sys

from absl import app, flags

_PARTITION = flags.DEFINE_string("partition", "dev", "Which evaluation of the runs to compare.")


def comparison_table(run_dirs, partition: str) -> str:
    from emotion_e2e import training  # noqa: PLC0415

    rows, names = [], None
    for run in run_dirs:
        path = os.path.join(run, "eval", partition, "report.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} not found: run eval.py --run_dir={run} --partition={partition} first")
        with open(path) as f:
            scores = json.load(f)["scores"]["partition"]
        names = names or [k for k in scores["ccc"] if k != "mean"]
        modalities = "+".join(training.load_run_config(run).model.modalities)
        rows.append((os.path.basename(os.path.normpath(run)), modalities, scores))
    head = f"{'run':<22}{'modalities':<14}" + "".join(f"{'CCC ' + n:>14}" for n in names) + f"{'CCC mean':>12}"
    lines = [f"{partition} partition, whole-partition CCC", head]
    for run, modalities, s in rows:
        lines.append(f"{run:<22}{modalities:<14}" + "".join(f"{s['ccc'][n]:>14.3f}" for n in names)
                     + f"{s['ccc']['mean']:>12.3f}")
    return "\n".join(lines)


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("give one or more run directories")
    try:
        print(comparison_table(argv[1:], _PARTITION.value))
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main)
