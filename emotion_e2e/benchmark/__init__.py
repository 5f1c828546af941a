"""Benchmarks that print figures (never a pass/fail test), one module per suite.

  python -m emotion_e2e.benchmark              # every suite
  python -m emotion_e2e.benchmark --suite=data

``models``, ``data``, ``faces`` and ``serving`` (each module's docstring says what it measures);
``media`` writes the recordings they run on, ``live`` times predict on a live source."""
