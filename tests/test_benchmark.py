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
