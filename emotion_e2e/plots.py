"""PNG plots of predicted (and gold) traces over time: one figure per recording, a panel per
label dimension. Used by eval.py (prediction against gold) and predict (prediction alone)."""

from __future__ import annotations

import io

import numpy as np

from emotion_e2e import run_dir as run_lib
from emotion_e2e.errors import ConfigError

FIGURE_WIDTH, PANEL_HEIGHT, DPI = 10, 2.2, 80


def plot_traces(path: str, title: str, time: np.ndarray, pred: dict, gold: dict | None = None,
                no_face: np.ndarray | None = None, error: type[ValueError] = ConfigError, lines=None):
    """Writes a PNG to ``path`` (atomically, through tf.io.gfile: any file system TF reads; a
    failed write is ``error`` naming ``path``, ``run_dir.write_file``).

    Args:
      time: ``(frames,)`` seconds.
      pred: ``{dimension: (frames,)}`` predictions, one panel each in this order.
      gold: the same for the gold standard, drawn under the predictions, or None.
      no_face: ``(frames,)`` bool, frames where no face was found (shaded), or None.
      lines: names of several predictions per dimension: ``pred``'s values are then
        ``(frames, len(lines))``, one coloured line each (NaN where a line has no value).
    """
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(len(pred), 1, figsize=(FIGURE_WIDTH, PANEL_HEIGHT * len(pred)), sharex=True,
                             squeeze=False)
    for ax, (name, values) in zip(axes[:, 0], pred.items()):
        if gold is not None:
            ax.plot(time, gold[name], color="black", lw=1.2, label="gold")
        if lines is None:
            ax.plot(time, values, color="tab:red", lw=1.0, label="prediction")
        else:
            for k, line in enumerate(lines):
                ax.plot(time, values[:, k], lw=1.0, label=line)
        if no_face is not None and no_face.any():
            ax.fill_between(time, 0, 1, where=no_face, step="pre", color="0.85",
                            transform=ax.get_xaxis_transform(), label="no face found", lw=0)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0, 0].set_title(title)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("time (s)")
    fig.tight_layout()
    png = io.BytesIO()
    try:
        fig.savefig(png, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    run_lib.write_file(path, png.getvalue(), error)
