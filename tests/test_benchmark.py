"""The benchmark's own measurements: the figures they print are computed correctly."""

import sys

import numpy as np

from emotion_e2e import benchmark


def test_compare_resamplers_reports_figures():
    report = benchmark.compare_resamplers(seconds=0.5)
    for method in ("scipy_resample_poly", "tfio_audio_resample"):
        for pair in ("44100->16000", "48000->16000"):
            fig = report[method][pair]
            assert fig["sec_per_audio_sec"] > 0 and fig["len_out"] == 8000
            assert fig["freq_err_hz"] < 0.1 and fig["amp_err"] < 0.01
    assert report["scipy_resample_poly"]["44100->16000"]["snr_db"] > 50


def test_peak_rss_is_the_commands_own_not_its_parents():
    parent = np.ones(400 * 2**20 // 8)  # this process holds 400 MB while the command runs
    child = "import numpy as np; x = np.ones(100 * 2**20 // 8)"
    peak = benchmark.peak_rss_mb([sys.executable, "-c", child])
    assert 100 < peak < 300, peak  # the command's 100 MB and its interpreter, not this process's 400 MB
    del parent
