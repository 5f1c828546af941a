"""``python -m emotion_e2e.benchmark [--suite=all|models|data|faces|serving]``."""

from __future__ import annotations

from absl import app, flags

from emotion_e2e.benchmark import data, faces, models, serving

SUITES = {"models": models.models_suite, "data": data.data_suite, "faces": faces.faces_suite,
          "serving": serving.serving_suite}
_SUITE = flags.DEFINE_enum("suite", "all", ["all", *SUITES], "Which benchmarks to run.")


def main(argv):
    del argv
    for name, suite in SUITES.items():
        if _SUITE.value in ("all", name):
            suite()


if __name__ == "__main__":
    app.run(main)
