r"""Benchmarks that print figures (never a pass/fail test).

  python -m emotion_e2e.benchmark              # everything
  python -m emotion_e2e.benchmark --suite=data

data: reader throughput on the demo corpus (frames/s; targets: audio+video with
augmentation >= 5,000, audio-only >= 50,000 on 2 cores), the resampler comparison
behind the choice of scipy's polyphase filter, and peak resident memory of the
converter on 1- and 5-minute 1280×720 recordings (it must not grow with length).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

_SUITE = flags.DEFINE_enum("suite", "all", ["all", "data"], "Which benchmarks to run.")
_RECORDS = flags.DEFINE_string("records", None, "A converted demo corpus (default: convert one into a temp dir).")
_BATCHES = flags.DEFINE_integer("batches", 40, "Batches timed per reader configuration.")
_MINUTES = flags.DEFINE_list("memory_minutes", ["1", "5"], "Lengths of the converter memory runs (minutes).")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reader_throughput(records_dir: str, batches: int) -> list[tuple[str, float]]:
    """Frames/s of the training (and eval) pipelines, after a warm-up."""
    from emotion_e2e.config import ReaderConfig  # noqa: PLC0415
    from emotion_e2e.data import reader  # noqa: PLC0415

    pattern = os.path.join(records_dir, "train-*.tfrecord")
    cases = [("audio only, train", ReaderConfig(modalities=("audio",)), True),
             ("video only, eval (no augmentation)", ReaderConfig(modalities=("video",)), False),
             ("video only, train + augmentation", ReaderConfig(modalities=("video",)), True),
             ("audio+video, train + augmentation", ReaderConfig(), True)]
    rows = []
    for name, cfg, training in cases:
        ds = reader.make_dataset(pattern, cfg, training=training, repeat=True, seed=0)
        it = iter(ds)
        for _ in range(5):
            next(it)
        t0, frames = time.perf_counter(), 0
        for _ in range(batches):
            frames += int(next(it)["mask"].numpy().sum())
        rows.append((name, frames / (time.perf_counter() - t0)))
    return rows


def _face_video(path: str, seconds: float, size=(720, 1280), fps=30):
    """A 1280×720 H.264 + AAC recording with a real face (scikit-image's astronaut) moving slowly."""
    import av  # noqa: PLC0415
    from skimage.data import astronaut  # noqa: PLC0415 - the test extra

    import cv2  # noqa: PLC0415

    face = cv2.resize(astronaut()[0:300, 60:360], (600, 600))  # a close-up: the face is ~180 px
    rate = 48000
    with av.open(path, "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.height, v.width, v.pix_fmt = size[0], size[1], "yuv420p"
        v.options = {"preset": "ultrafast", "crf": "28"}
        a = c.add_stream("aac", rate=rate, layout="stereo")
        base = np.full(size + (3,), 70, np.uint8)
        for k in range(int(seconds * fps)):
            img = base.copy()
            x = 340 + int(240 * np.sin(k / 90))
            img[60:660, x:x + 600] = face
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = k
            for p in v.encode(f):
                c.mux(p)
        for p in v.encode(None):
            c.mux(p)
        block = 1024
        t = np.arange(block) / rate
        for i in range(0, int(seconds * rate), block):
            x = (0.3 * np.sin(2 * np.pi * 220 * (t + i / rate))).astype(np.float32)
            f = av.AudioFrame.from_ndarray(np.stack([x, x]), format="fltp", layout="stereo")
            f.sample_rate, f.pts = rate, i
            for p in a.encode(f):
                c.mux(p)
        for p in a.encode(None):
            c.mux(p)


def converter_memory(minutes: list[float], workdir: str) -> list[tuple[float, float, float]]:
    """``(minutes, peak RSS MB, frames/s)`` of ``prepare --source=manifest`` on one recording."""
    rows = []
    for m in minutes:
        d = os.path.join(workdir, f"mem_{m:g}min")
        os.makedirs(d, exist_ok=True)
        video = os.path.join(d, "rec.mp4")
        _face_video(video, 60 * m)
        with open(os.path.join(d, "manifest.csv"), "w") as f:
            f.write(f"recording_id,partition,audio,video,labels\nrec,test,,{video},\n")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "emotion_e2e.prepare", "--source=manifest",
                                 f"--input={d}/manifest.csv", f"--output_dir={d}/out"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, CI="true"))
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        if status != 0:
            raise RuntimeError(f"conversion failed: {proc.stderr.read().decode()[-2000:]}")
        rows.append((m, usage.ru_maxrss / 1024, 60 * m * 25 / seconds))
    return rows


def data_suite():
    from emotion_e2e.data import convert, demo, media, sources  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        records = _RECORDS.value
        if not records:
            records = os.path.join(tmp, "demo")
            t0 = time.perf_counter()
            convert.convert(sources.demo_recordings(demo.DemoConfig()), convert.ConvertConfig(), records,
                            workers=2, source="demo")
            print(f"demo corpus converted in {time.perf_counter() - t0:.1f} s (2 workers)")
        rss0 = _rss_mb()
        print("\nreader throughput (demo train partition, seq_len 150, batch 2):")
        for name, fps in reader_throughput(records, _BATCHES.value):
            print(f"  {name:<38} {fps:>10,.0f} frames/s  ({fps * 0.04:,.0f}× real time)")
        print(f"  reader process peak RSS: {_rss_mb():.0f} MB (before reading: {rss0:.0f} MB)")

        print("\nresampling to 16 kHz (seconds of CPU per second of audio; 1 kHz sine):")
        for method, pairs in media.compare_resamplers().items():
            for pair, r in pairs.items():
                print(f"  {method:<22} {pair:<13} {r['sec_per_audio_sec'] * 1e3:7.3f} ms/s  "
                      f"amplitude error {r['amp_err'] * 100:.3f} %  delay {r['delay_out_samples']:+.3f} samples  "
                      f"SNR {r['snr_db']:.1f} dB")

        print("\nconverter peak memory, one 1280×720 30 fps H.264 + 48 kHz AAC recording, Haar detector:")
        for m, rss, fps in converter_memory([float(x) for x in _MINUTES.value], tmp):
            print(f"  {m:g} min: peak RSS {rss:,.0f} MB, {fps:,.0f} frames/s ({fps * 0.04:.2f}× real time)")


def main(argv):
    del argv
    if _SUITE.value in ("all", "data"):
        data_suite()


if __name__ == "__main__":
    app.run(main)
