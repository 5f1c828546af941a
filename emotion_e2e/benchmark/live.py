"""predict on a live source, timed: a recording fed through a named pipe (or a socket) at its own
pace, the CSV watched as it grows, and the delay from each chunk's last frame entering the pipe to
its rows in the CSV."""

from __future__ import annotations

import os
import re
import threading
import time

LIVE_CHUNKS = (0.5, 1.0)  # --chunk_seconds of the live latency runs


def wav_of(path: str, out: str) -> str:
    """The sound of ``path`` as a 16-bit WAV ``out`` (its first audio stream, decoded)."""
    import av  # noqa: PLC0415

    with av.open(path) as src, av.open(out, "w") as dst:
        a = src.streams.audio[0]
        s = dst.add_stream("pcm_s16le", rate=a.rate, layout=a.layout.name)
        for frame in src.decode(a):
            frame.pts = None
            for packet in s.encode(frame):
                dst.mux(packet)
        for packet in s.encode(None):
            dst.mux(packet)
    return out



class PacedFeed(threading.Thread):
    """Writes a file into ``dst`` (a named pipe, or a socket's file) at the pace of its own
    timestamps: the bytes of the packet of time t (from the stream's start) go out at wall time
    ``start + t``. ``written`` holds ``(t, wall time)`` per packet; ``stop_after`` seconds of
    media, then it holds the pipe open without writing until ``release`` is set."""

    def __init__(self, path: str, dst=None, stop_after: float | None = None):
        super().__init__(daemon=True)
        self.path, self.dst, self.stop_after = path, dst, stop_after
        import av  # noqa: PLC0415

        self.written, self.release, self.end = [], threading.Event(), None
        with open(path, "rb") as f:
            self.data = f.read()
        with av.open(path) as c:  # where each packet starts in the file, and its time
            starts = [(p.pts * p.time_base, p.pos) for p in c.demux()
                      if p.pts is not None and p.pos is not None and p.pos >= 0]
        # A packet ends where the next one starts: in MPEG-TS its bytes are spread over 188-byte
        # transport packets, beyond its start plus its size.
        positions = sorted({pos for _, pos in starts}) + [len(self.data)]
        end = dict(zip(positions, positions[1:]))
        start = min(t for t, _ in starts)
        self.marks = sorted((float(t - start), end[pos]) for t, pos in starts)

    def run(self):
        out = open(self.dst, "wb") if isinstance(self.dst, (str, os.PathLike)) else self.dst
        try:
            t0, sent = time.perf_counter(), 0
            for t, end in self.marks:
                if self.stop_after is not None and t > self.stop_after:
                    self.release.wait()
                    return
                time.sleep(max(0.0, t0 + t - time.perf_counter()))
                end = max(end, sent)
                out.write(self.data[sent:end])
                out.flush()
                sent = end
                self.written.append((t, time.perf_counter()))
            out.write(self.data[sent:])
            out.flush()
            self.end = time.perf_counter()
        except BrokenPipeError:
            pass
        finally:
            out.close()


class RowWatch(threading.Thread):
    """Polls a CSV as it grows: ``seen`` holds ``(wall time, rows)`` whenever the row count changes."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.seen, self.done = path, [], threading.Event()

    def run(self):
        last = 0
        while not self.done.is_set():
            try:
                with open(self.path) as f:
                    rows = max(0, sum(1 for _ in f) - 1)
            except FileNotFoundError:
                rows = 0
            if rows != last:
                self.seen.append((time.perf_counter(), rows))
                last = rows
            time.sleep(0.005)


def chunk_delays(written, seen, rows_per_chunk: int, step: float = 0.04) -> list[float]:
    """Per chunk of ``rows_per_chunk`` rows, the seconds from its last frame's packet entering the
    source (``PacedFeed.written``) to its rows in the CSV (``RowWatch.seen``)."""
    out = []
    for k in range(1, len(seen) + 1):
        want = k * rows_per_chunk
        when = next((w for w, n in seen if n >= want), None)
        # the last packet that starts within the chunk's last frame, which ends at want·step
        entered = max((w for t, w in written if t < want * step - 1e-9), default=None)
        if when is not None and entered is not None:
            out.append(when - entered)
    return out


def remux_ts(path: str, out: str, kinds=("audio", "video")) -> str:
    """``path``'s packets of its streams of ``kinds`` copied into an MPEG-TS file ``out`` (a
    broadcast stream: no index, readable from any point on), as a camera or an encoder would
    stream them."""
    import av  # noqa: PLC0415

    with av.open(path) as src, av.open(out, "w", format="mpegts") as dst:
        kept = [s for s in src.streams if s.type in kinds]
        streams = {s.index: dst.add_stream_from_template(s) for s in kept}
        for packet in src.demux(*kept):
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    return out


def live_latency(predictor, source: str, chunk_seconds: float, workdir: str) -> tuple[list[float], float]:
    """``(per-chunk delays in seconds, real-time factor)`` of ``predict`` reading ``source`` (a
    file) through a named pipe fed at the file's own pace: each delay runs from a chunk's last
    frame entering the pipe to its rows in the CSV."""
    from emotion_e2e import predict  # noqa: PLC0415

    fifo = os.path.join(workdir, f"live_{time.monotonic_ns()}{os.path.splitext(source)[1]}")
    os.mkfifo(fifo)
    out = os.path.join(workdir, "live_out")
    feed, watch = PacedFeed(source, fifo), RowWatch(os.path.join(out, predict.stem(fifo) + ".csv"))
    feed.start()
    watch.start()
    reports = []
    predict.predict_files(predictor, [fifo], out, chunk_seconds=chunk_seconds, progress=False, report=reports.append)
    watch.done.set()
    feed.join()
    os.remove(fifo)
    step = predictor.time_base.frame_step
    frames = round(chunk_seconds / step)
    rtf = float(re.search(r"([0-9.]+)× real time", reports[-1]).group(1))
    return chunk_delays(feed.written, watch.seen, frames, step), rtf
