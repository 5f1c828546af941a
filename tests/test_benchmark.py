"""The benchmark's own measurements: the figures they print are computed correctly."""

from emotion_e2e import benchmark


def test_compare_resamplers_reports_figures():
    report = benchmark.compare_resamplers(seconds=0.5)
    for method in ("scipy_resample_poly", "tfio_audio_resample"):
        for pair in ("44100->16000", "48000->16000"):
            fig = report[method][pair]
            assert fig["sec_per_audio_sec"] > 0 and fig["len_out"] == 8000
            assert fig["freq_err_hz"] < 0.1 and fig["amp_err"] < 0.01
    assert report["scipy_resample_poly"]["44100->16000"]["snr_db"] > 50


def test_peak_rss_is_the_child_process_own(tmp_path):
    """The child's own peak: neither this process's size (carried across exec by ru_maxrss) nor less
    than what the child really touched."""
    import os  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    parent = np.ones(400 * 2**20, np.uint8)  # this process: > 400 MB resident
    (tmp_path / "grab.py").write_text("block = bytearray(300 * 2**20)\nblock[::4096] = b'x' * len(block[::4096])\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    small, _ = benchmark.run_module_peak_rss("json.tool", ["--help"], env=env)
    big, _ = benchmark.run_module_peak_rss("grab", [], env=env)
    assert parent.sum() > 0 and small < 100 and 300 < big < 400, (small, big)
