"""The serving suite: ``emotion_e2e.predict`` with the demo's face and audio+face models
(resnet10) and the paper's audio, face and audio+face models (ResNet-50), random weights, on a
1280×720 30 fps H.264 + AAC recording with a real face, and ``--faces=all`` on a panel of three
people: × real time of each stage (decode: PyAV decoding, resampling and frame selection alone;
faces: detection with the default detector, tracking, crops and the JPEG round trip; model: the
stream signature in chunks, once per person) and of the whole file, and the latency of one
1-second stream call; predict on a live source (an MPEG-TS, and a WAV for the audio model, fed
through a named pipe at its own pace): p50/p95 of the delay from a chunk's last frame entering
the pipe to its rows in the CSV, at 0.5 s and 1 s chunks; and the peak resident memory of the
predict CLI on 1- and 5-minute recordings (it must not grow with length)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time

import numpy as np
from absl import flags

from emotion_e2e.benchmark.live import LIVE_CHUNKS, live_latency, remux_ts, wav_of
from emotion_e2e.benchmark.media import face_video, peak_rss_mb

_SERVING_SECONDS = flags.DEFINE_float("serving_seconds", 60, "serving: seconds of the recording timed per stage.")
_LIVE_SECONDS = flags.DEFINE_float("live_seconds", 20, "serving: seconds of the stream fed to each live latency run.")
_SERVING_MINUTES = flags.DEFINE_list("serving_memory_minutes", ["1", "5"],
                                     "serving: lengths of the predict CLI memory runs (minutes).")

# The demo's face network (flags/demo.flags); the rest of the demo model is the paper's.
DEMO_FACE_NET = "resnet10"


def random_run(workdir: str, modalities: tuple[str, ...], face_net: str) -> str:
    """A run directory with the model of ``modalities`` and face backbone ``face_net`` (random
    weights). It has no data directory: the time base and face crops are the defaults (predict
    warns; silenced here)."""
    from emotion_e2e import run_dir as run_lib  # noqa: PLC0415
    from emotion_e2e.config import FaceNetConfig, InputConfig, ModelConfig, TrainConfig  # noqa: PLC0415
    from emotion_e2e.models import build_model  # noqa: PLC0415

    cfg = TrainConfig(data_dir=os.path.join(workdir, "no_data"), inputs=InputConfig(modalities=modalities),
                      model=ModelConfig(face=FaceNetConfig(backbone=face_net)))
    run = os.path.join(workdir, "run_" + "_".join(modalities) + "_" + face_net)
    run_lib.save_config(run, cfg)
    os.makedirs(os.path.dirname(run_lib.checkpoint_path(run)), exist_ok=True)
    build_model(cfg.model, cfg.inputs).save(run_lib.checkpoint_path(run))
    return run


def decode_seconds(path: str, modalities, time_base) -> float:
    """Wall seconds of what the converter decodes for ``modalities`` without the faces: the
    durations, then the audio and video frames on the grid."""
    from emotion_e2e.data import media  # noqa: PLC0415

    t0 = time.perf_counter()
    n = []
    if "audio" in modalities:
        n.append(time_base.frames_in(media.audio_duration(path)))
    if "face" in modalities:
        n.append(time_base.frames_in(media.video_duration(path)))
    if "audio" in modalities:
        for _ in media.audio_frames(path, time_base, min(n)):
            pass
    if "face" in modalities:
        for _ in media.video_frames(path, time_base, min(n)):
            pass
    return time.perf_counter() - t0


def stream_latency(predictor, frames: int, repeats: int = 10) -> float:
    """Median seconds of one ``stream`` call on ``frames`` frames (random inputs), after a warm-up."""
    rng = np.random.default_rng(0)
    size = predictor.description["face_size"]
    x = {}
    if "audio" in predictor.modalities:
        x["audio"] = rng.uniform(-0.5, 0.5, (1, frames, predictor.description["samples_per_frame"])).astype(np.float32)
    if "face" in predictor.modalities:
        x["face"] = rng.integers(0, 256, (1, frames, size, size, 3), dtype=np.uint8)
    state = predictor.initial_state()
    for _ in range(2):
        predictor.stream(x, state)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.stream(x, state)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def serving_suite():
    from emotion_e2e import predict  # noqa: PLC0415
    from emotion_e2e.config import FaceConfig  # noqa: PLC0415

    # The demo models (resnet10 face network) and, beside them, the paper's (ResNet-50); with
    # the default detector (FaceConfig's), and the multimodal ones with MediaPipe's as well.
    cases = [("audio", ("audio",), "resnet50", None, 1),
             ("face (demo, resnet10)", ("face",), DEMO_FACE_NET, None, 1),
             ("audio+face (demo)", ("audio", "face"), DEMO_FACE_NET, None, 1),
             ("audio+face (demo), mediapipe", ("audio", "face"), DEMO_FACE_NET, "mediapipe", 1),
             ("face (ResNet-50)", ("face",), "resnet50", None, 1),
             ("audio+face (ResNet-50)", ("audio", "face"), "resnet50", None, 1),
             ("audio+face (ResNet-50), mediapipe", ("audio", "face"), "resnet50", "mediapipe", 1),
             # predict --faces=all: a trace per person, each through the model
             ("audio+face (demo), 3 people, all", ("audio", "face"), DEMO_FACE_NET, None, 3),
             ("audio+face (ResNet-50), 3 people, all", ("audio", "face"), "resnet50", None, 3)]
    with tempfile.TemporaryDirectory() as tmp:
        videos = {}
        for people in sorted({c[-1] for c in cases}):
            videos[people] = os.path.join(tmp, f"talk_{people}.mp4")
            face_video(videos[people], _SERVING_SECONDS.value, people=people)
        runs = {(modalities, net): random_run(tmp, modalities, net) for _, modalities, net, _, _ in cases}
        print(f"\npredict, one {_SERVING_SECONDS.value:g} s 1280×720 30 fps H.264 + 48 kHz AAC recording, chunks "
              f"of {predict.DEFAULT_CHUNK_SECONDS:g} s, {FaceConfig().detector} detector and face tracks unless named: "
              f"× real time per stage (faces: detection, tracking, crops and JPEG; a 3-person panel with "
              f"--faces=all runs the model once per person)")
        print(f"{'model, detector':<40}{'decode':>9}{'faces':>9}{'model':>9}{'whole file':>12}{'1 s chunk latency':>20}")
        for name, modalities, net, detector, people in cases:
            with contextlib.redirect_stderr(io.StringIO()):
                predictor = predict.Predictor.load(runs[modalities, net])
            latency = stream_latency(predictor, round(1 / predictor.time_base.frame_step))
            video = videos[people]
            table = predict.predict_file(predictor, video, progress=False, face_detector=detector,
                                         faces=predict.MAIN if people == 1 else predict.ALL)
            seconds, media_seconds = table.attrs["seconds"], table.attrs["frames"] * predictor.time_base.frame_step
            decode = decode_seconds(video, modalities, predictor.time_base)
            faces = (f"{media_seconds / max(seconds['media'] - decode, 1e-9):>9.1f}" if "face" in modalities
                     else f"{'-':>9}")
            tracks = f", {table.attrs['face_tracks']} tracks" if people > 1 else ""
            print(f"{name:<40}{media_seconds / decode:>9.1f}{faces}{media_seconds / seconds['model']:>9.1f}"
                  f"{table.attrs['real_time_factor']:>12.1f}{latency * 1e3:>17.0f} ms{tracks}")

        print(f"\npredict on a live source: the first {_LIVE_SECONDS.value:g} s of the recording as MPEG-TS (the "
              f"WAV of its sound for the audio model) fed through a named pipe at its own pace; delay from a chunk's "
              f"last frame entering the pipe to its rows in the CSV (the first chunk, which builds the graph, left out)")
        print(f"{'model':<28}{'chunk':>7}{'p50':>9}{'p95':>9}{'max':>9}{'× real time':>13}")
        clip = os.path.join(tmp, "live.mp4")
        face_video(clip, _LIVE_SECONDS.value)
        sources = {"ts": remux_ts(clip, os.path.join(tmp, "live.ts")), "wav": wav_of(clip, os.path.join(tmp, "live.wav"))}
        for name, modalities, kind in (("audio", ("audio",), "wav"), ("face (demo)", ("face",), "ts"),
                                       ("audio+face (demo)", ("audio", "face"), "ts")):
            net = "resnet50" if modalities == ("audio",) else DEMO_FACE_NET
            with contextlib.redirect_stderr(io.StringIO()):
                predictor = predict.Predictor.load(runs.get((modalities, net)) or random_run(tmp, modalities, net))
            for chunk in LIVE_CHUNKS:
                delays, rtf = live_latency(predictor, sources[kind], chunk, tmp)
                d = np.array(delays[1:]) * 1e3
                print(f"{name:<28}{chunk:>6g}s{np.median(d):>6.0f} ms{np.percentile(d, 95):>6.0f} ms"
                      f"{d.max():>6.0f} ms{rtf:>13.1f}")

        print(f"\npredict CLI peak memory, audio+face (ResNet-50), 1280×720 30 fps H.264 + 48 kHz AAC, "
              f"{FaceConfig().detector} detector (the default):")
        for m in (float(x) for x in _SERVING_MINUTES.value):
            video = os.path.join(tmp, f"talk_{m:g}min.mp4")
            face_video(video, 60 * m)
            t0 = time.perf_counter()
            rss = peak_rss_mb([sys.executable, "-m", "emotion_e2e.predict",
                               f"--model={runs[('audio', 'face'), 'resnet50']}",
                               f"--input={video}", f"--output_dir={os.path.join(tmp, 'predictions')}"],
                              env=dict(os.environ, CI="true"))
            wall = time.perf_counter() - t0
            print(f"  {m:g} min: peak RSS {rss:,.0f} MB, {60 * m / wall:.2f}× real time (with start-up)")
