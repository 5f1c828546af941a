"""Recordings → sharded TFRecords, one shard per recording, plus ``metadata.json``.

The conversion streams frame by frame (decode → detect → crop → encode → write)
so memory does not grow with recording length or video resolution. Shards are
written into the hidden ``.incomplete/`` folder and put in place only when every
recording of the run has converted, and replacing ``metadata.json`` is the
commit point (``_commit``): a failed run leaves the previous output byte for
byte as it was, and what a killed run leaves is repaired by the next run.
Partitions a run does not convert are kept as they are. A run holds the lock
of the output folder (``emotion_e2e.locking``) from before it repairs or clears
anything there until its commit is done, so a second conversion into the same
folder is refused at once instead of mixing its shards with the first's.

The recordings are converted in this process, in ``workers`` processes, or as
an Apache Beam pipeline (``beam_options``, the ``beam`` extra); everything
else (the plan, the metadata, the commit) runs in the calling process.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import multiprocessing
import os
import shutil
import typing
import uuid
from collections.abc import Iterator, Sequence

import numpy as np

from emotion_e2e import locking
from emotion_e2e.config import MODALITIES, FaceConfig, TimeBase, check_modalities
from emotion_e2e.data import metadata, names, schema
from emotion_e2e.errors import DataError, io_reason

# Shards are written into this hidden folder under ``{shard}.part`` names: TF's glob
# does not descend into folders, so no ``DIR/*.tfrecord`` pattern matches them.
INCOMPLETE = ".incomplete"
_PART = ".part"
_LEGACY_TMP_PREFIX = ".tmp-"  # the temporary names of earlier versions, beside the shards


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    time_base: TimeBase = TimeBase()
    face: FaceConfig = FaceConfig()
    modalities: tuple[str, ...] = MODALITIES
    # Labels and media may differ by this many frames (then both are trimmed to
    # the shorter); a larger difference is an error.
    max_length_mismatch: int = 1

    def __post_init__(self):
        object.__setattr__(self, "modalities", check_modalities(self.modalities, type(self).__name__))
        if self.max_length_mismatch < 0:
            raise ValueError(f"ConvertConfig: max_length_mismatch must be >= 0. "
                             f"Received: {self.max_length_mismatch}")


class Frame(typing.NamedTuple):
    """One 40 ms frame ready to write: audio ``(samples_per_frame,)`` float32 or None,
    the face crop's JPEG bytes or None, whether the face was found in this frame,
    labels ``(dims,)`` or None for unlabelled recordings, the number of face tracks
    in the recording (``tracking``) where faces were tracked, else None, and the ``faces.Box``
    the crop was cut from (the main track's, in pixels of the frame as displayed) or None."""

    audio: np.ndarray | None
    face_jpeg: bytes | None
    face_found: bool
    labels: np.ndarray | None
    face_tracks: int | None = None
    face_box: tuple[int, int, int, int] | None = None


@dataclasses.dataclass(frozen=True)
class Recording(abc.ABC):
    """One recording of a corpus. Subclasses are plain picklable dataclasses so
    that ``--workers`` processes can open them. Its id and partition become file
    names, so both must be names (``names``): DataError otherwise."""

    recording_id: str
    partition: str

    def __post_init__(self):
        where = type(self).__name__
        names.check_recording_id(self.recording_id, where)
        names.check_partition(self.partition, f"{where} {self.recording_id}")

    @abc.abstractmethod
    def open(self, cfg: ConvertConfig) -> tuple[int, tuple[str, ...], Iterator[Frame]]:
        """``(num_frames, label_names, frames)``; ``label_names`` is empty when unlabelled."""


@dataclasses.dataclass
class _Summary:
    recording_id: str
    partition: str
    label_names: tuple[str, ...]
    num_frames: int = 0
    faces_found: int = 0
    face_tracks: int | None = None
    label_sum: np.ndarray | None = None
    label_sumsq: np.ndarray | None = None
    label_min: np.ndarray | None = None
    label_max: np.ndarray | None = None

    def add(self, frame: Frame):
        self.num_frames += 1
        self.faces_found += bool(frame.face_found)
        if frame.face_tracks is not None:
            self.face_tracks = frame.face_tracks
        if frame.labels is not None:
            x = np.asarray(frame.labels, np.float64)
            if self.label_sum is None:
                self.label_sum, self.label_sumsq = np.zeros_like(x), np.zeros_like(x)
                self.label_min, self.label_max = x.copy(), x.copy()
            self.label_sum += x
            self.label_sumsq += x * x
            np.minimum(self.label_min, x, out=self.label_min)
            np.maximum(self.label_max, x, out=self.label_max)


def write_recording(recording: Recording, cfg: ConvertConfig, path: str) -> _Summary:
    """Streams one recording's frames into the TFRecord file ``path``; errors name the recording.

    A write that fails (a full disk: the TFRecord writer's ``ResourceExhaustedError``; the
    recordings are read without TF, so its errors are the writer's) is a DataError naming
    ``path`` and the reason, raised in the process that writes (a ``--workers`` or Beam worker
    too), so it reaches the user as one line.
    """
    import tensorflow as tf  # noqa: PLC0415 - workers import TF only when they write

    try:
        return _write(recording, cfg, path)
    except DataError as e:
        if recording.recording_id in str(e):
            raise
        raise DataError(f"recording {recording.recording_id} ({recording.partition}): {e}") from e
    except tf.errors.OpError as e:
        raise DataError(f"recording {recording.recording_id} ({recording.partition}): cannot write {path}: "
                        f"{io_reason(e)}; the previous output is kept") from e


def _write(recording, cfg, path):
    import tensorflow as tf  # noqa: PLC0415

    num_frames, label_names, frames = recording.open(cfg)
    summary = _Summary(recording.recording_id, recording.partition, tuple(label_names))
    spf = cfg.time_base.samples_per_frame
    with tf.io.TFRecordWriter(path) as writer:
        for i, frame in enumerate(frames, start=1):
            if i > num_frames:
                raise DataError(f"recording {recording.recording_id}: more than {num_frames} frames produced")
            if frame.audio is not None:
                _check_audio(frame.audio, spf, f"recording {recording.recording_id}, frame {i}")
            labels = None if frame.labels is None else dict(zip(label_names, frame.labels.tolist()))
            writer.write(schema.encode_frame(
                recording_id=recording.recording_id, partition=recording.partition, frame=i,
                num_frames=num_frames, time=float(cfg.time_base.frame_time(i)), audio=frame.audio,
                face_jpeg=frame.face_jpeg, face_found=frame.face_found, labels=labels))
            summary.add(frame)
    if summary.num_frames != num_frames:
        raise DataError(f"recording {recording.recording_id}: expected {num_frames} frames, "
                        f"produced {summary.num_frames}")
    return summary


def _check_audio(audio, spf, where):
    """DataError naming ``where`` for audio that is not ``(spf,)`` finite samples."""
    if np.shape(audio) != (spf,):
        raise DataError(f"{where}: audio of shape {np.shape(audio)}, expected ({spf},)")
    audio = np.asarray(audio)
    bad = np.flatnonzero(~np.isfinite(audio))
    if len(bad):
        raise DataError(f"{where}: {len(bad)} of its {spf} audio samples are not finite (the first, sample "
                        f"{bad[0] + 1}, is {audio[bad[0]]}); audio must be finite")


def _work(job):
    recording, cfg, path = job
    return write_recording(recording, cfg, path)


def _shard_plan(recordings: Sequence[Recording], output_dir: str):
    """``[(recording, final_path)]``: per partition, one shard per recording in id order."""
    by_partition: dict[str, list[Recording]] = {}
    for r in recordings:
        by_partition.setdefault(r.partition, []).append(r)
    partition_of = {}
    for r in recordings:
        other = partition_of.setdefault(r.recording_id, r.partition)
        if other != r.partition:
            a, b = sorted((other, r.partition))
            raise DataError(f"recording id {r.recording_id} is in two partitions, {a} and {b}: a recording in "
                            f"more than one partition leaks between them")
    plan = []
    for partition, recs in sorted(by_partition.items()):
        recs.sort(key=lambda r: r.recording_id)
        ids = [r.recording_id for r in recs]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise DataError(f"partition {partition}: duplicate recording ids {dupes}")
        for index, r in enumerate(recs):
            plan.append((r, names.file_in(output_dir, schema.shard_name(partition, index, len(recs)))))
    return plan


def _stats(summaries: list[_Summary], label_names) -> dict:
    n = sum(s.num_frames for s in summaries)
    out = {"num_recordings": len(summaries), "num_frames": n,
           "face_found_ratio": sum(s.faces_found for s in summaries) / max(n, 1)}
    labelled = [s for s in summaries if s.label_sum is not None]
    if labelled:
        total = sum(s.num_frames for s in labelled)
        mean = sum(s.label_sum for s in labelled) / total
        var = np.maximum(sum(s.label_sumsq for s in labelled) / total - mean ** 2, 0.0)
        lo = np.min([s.label_min for s in labelled], axis=0)
        hi = np.max([s.label_max for s in labelled], axis=0)
        out["labels"] = {name: {"mean": float(mean[d]), "std": float(np.sqrt(var[d])),
                                "min": float(lo[d]), "max": float(hi[d])}
                         for d, name in enumerate(label_names)}
    return out


def _progress(total):
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(total=total, unit="rec", desc="converting", dynamic_ncols=True,
                disable=None if os.environ.get("CI") else False)


def convert(recordings: Sequence[Recording], cfg: ConvertConfig, output_dir: str, *,
            workers: int = 1, beam_options: Sequence[str] | None = None, source: str = "") -> dict:
    """Converts ``recordings`` into ``output_dir``; returns the metadata it wrote.

    Args:
      recordings: the corpus; one shard per recording, grouped by partition.
      workers: processes converting recordings in parallel (1: in this process).
      beam_options: None, or convert the recordings as an Apache Beam pipeline
        run with these pipeline options (``["--runner=DirectRunner",
        "--direct_num_workers=2"]``; empty: the DirectRunner). Beam's workers
        write the shards into ``output_dir`` themselves, so on a remote runner
        it must be a folder they share with this process at the same path (a
        network filesystem): the commit renames files with ``os``, so ``gs://``
        and other object stores are not supported.
      source: the corpus kind, recorded in the metadata.

    Holds the lock of ``output_dir`` throughout (``emotion_e2e.locking``): a DataError naming the
    holder when another process is converting into it.
    """
    if beam_options is not None and workers != 1:
        raise ValueError(f"convert: workers is for the local conversion; give Beam's own options in beam_options. "
                         f"Received: workers={workers}, beam_options={list(beam_options)}")
    if beam_options is not None:
        import_beam()  # before anything in output_dir changes
    if not recordings:
        raise DataError(f"no recordings to convert into {output_dir}")
    plan = _shard_plan(recordings, output_dir)
    with _open_output_dir(output_dir) as incomplete:
        jobs = [(r, cfg, os.path.join(incomplete, os.path.basename(p) + _PART)) for r, p in plan]
        previous = metadata.read(output_dir, missing_ok=True)
        kept = _kept(previous, plan, cfg, output_dir)
        summaries = (_convert_all(jobs, workers) if beam_options is None
                     else _convert_beam(jobs, beam_options, incomplete))
        label_names = _label_names(summaries, kept, output_dir)
        meta = _metadata(kept, summaries, plan, cfg, label_names, source)
        _commit(output_dir, jobs, plan, meta)
    return meta


def _kept(previous: dict | None, plan, cfg: ConvertConfig, output_dir) -> dict:
    """The part of the previous metadata that this run keeps: ``{"partitions": ..., "recordings": ...}``
    of the partitions it does not convert.

    A run that contradicts them is refused here, before any conversion: a
    recording id already in a kept partition, settings other than theirs, or
    kept shards that do not match the metadata (``metadata.verify``).
    """
    converting = {r.partition for r, _ in plan}
    partitions = {p: v for p, v in (previous or {"partitions": {}})["partitions"].items() if p not in converting}
    if not partitions:
        return {"partitions": {}, "recordings": []}
    recordings = [e for e in previous["recordings"] if e["partition"] in partitions]
    path, names = metadata.path(output_dir), ", ".join(sorted(partitions))
    settings = {"modalities": list(cfg.modalities), "time_base": dataclasses.asdict(cfg.time_base),
                "samples_per_frame": cfg.time_base.samples_per_frame}
    if "face" in cfg.modalities:  # the crop settings matter to face records only
        settings["face"] = dataclasses.asdict(cfg.face)
    for key, value in settings.items():
        if previous[key] != value:
            raise DataError(f"{path}: partitions {names}, which this run keeps, were converted with {key} "
                            f"{previous[key]}; this run has {key} {value}. Convert every partition with the "
                            f"same settings, or into another --output_dir")
    kept_ids = {e["recording_id"]: e["partition"] for e in recordings}
    for r, _ in plan:
        if r.recording_id in kept_ids:
            raise DataError(f"recording id {r.recording_id} (partition {r.partition}) is already in partition "
                            f"{kept_ids[r.recording_id]} of {path}, which this run keeps: "
                            f"a recording in more than one partition leaks between them")
    metadata.verify(output_dir, previous, sorted(partitions))
    return {"partitions": partitions, "recordings": recordings}


def _label_names(summaries: list[_Summary], kept: dict, output_dir) -> tuple[str, ...]:
    """The label names of the converted recordings, which every labelled partition must share."""
    by_partition = {}
    for s in summaries:
        by_partition.setdefault(s.partition, {}).setdefault(s.label_names, []).append(s.recording_id)
    for p, groups in by_partition.items():
        if () in groups and len(groups) > 1:
            labelled = sorted(i for names, ids in groups.items() if names for i in ids)
            raise DataError(f"partition {p} mixes labelled recordings {labelled} and unlabelled ones "
                            f"{sorted(groups[()])}: a partition is labelled or not")
    label_sets = {s.label_names for s in summaries if s.label_names}
    if len(label_sets) > 1:
        raise DataError(f"recordings disagree on label names: {sorted(label_sets)}")
    label_names = next(iter(label_sets), ())
    for p, info in sorted(kept["partitions"].items()):
        if label_names and info["label_names"] and tuple(info["label_names"]) != label_names:
            converted = ", ".join(sorted(q for q, groups in by_partition.items() if label_names in groups))
            raise DataError(f"partition {converted} has labels {list(label_names)} but partition {p}, kept in "
                            f"{metadata.path(output_dir)}, has {info['label_names']}: every labelled partition "
                            f"needs the same label names")
    return label_names


@contextlib.contextmanager
def _open_output_dir(output_dir) -> Iterator[str]:
    """Creates ``output_dir`` and takes its lock (``locking.hold``: one conversion at a time),
    repairs what a killed run left in it, and creates the empty ``.incomplete/`` folder, whose path
    it yields; deletes that folder and releases the lock when the ``with`` block ends.

    Creating the lock file is the writability check: it is a real write in
    ``output_dir``, as the renames of the commit will be, and it is the only
    check that also holds for root, which ignores permission bits.
    """
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise DataError(f"output directory {output_dir} is a file, not a directory")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create output directory {output_dir}: {e.strerror or e}") from e
    incomplete = os.path.join(output_dir, INCOMPLETE)
    with locking.hold(output_dir, DataError, "output directory", "another --output_dir"):
        try:
            _recover(output_dir)
            _remove_leftovers(output_dir)
            os.makedirs(incomplete)
        except OSError as e:
            raise DataError(f"output directory {output_dir} is not writable: {e.strerror or e}") from e
        try:
            yield incomplete
        finally:
            shutil.rmtree(incomplete, ignore_errors=True)


def _remove_leftovers(output_dir):
    """Temporary files of a killed run: ``.incomplete/`` and hidden ``.part`` files
    (a metadata write's), and the temporary shards of earlier versions."""
    shutil.rmtree(os.path.join(output_dir, INCOMPLETE), ignore_errors=True)
    for name in os.listdir(output_dir):
        if name.startswith(_LEGACY_TMP_PREFIX) or (name.startswith(".") and name.endswith(_PART)):
            os.remove(os.path.join(output_dir, name))


def _convert_all(jobs, workers) -> list[_Summary]:
    summaries = []
    with _progress(len(jobs)) as bar:
        if workers > 1:
            ctx = multiprocessing.get_context("spawn")  # TF and fork do not mix
            with ctx.Pool(min(workers, len(jobs))) as pool:
                for s in pool.imap(_work, jobs):
                    summaries.append(s)
                    bar.update()
        else:
            for job in jobs:
                summaries.append(_work(job))
                bar.update()
    return summaries


BEAM_INSTALL_HINT = "pip install 'emotion_e2e[beam]'"


def import_beam():
    """``apache_beam``, or an ImportError saying which extra installs it."""
    try:
        import apache_beam  # noqa: PLC0415 - the beam extra, needed by the Beam runner only
    except ImportError as e:
        raise ImportError(f"the Beam runner needs Apache Beam, which is not installed: {BEAM_INSTALL_HINT} "
                          f"(the beam extra; {e})") from e
    return apache_beam


def _convert_beam(jobs, beam_options, incomplete) -> list[_Summary]:
    """``_convert_all`` as a Beam pipeline: Create(jobs) → Map(_work) → a TFRecord sink in ``incomplete``.

    The launcher reads the sink back and orders the summaries like ``jobs``. A
    recording's DataError is caught in the worker and carried as data, so it
    reaches the user as its own one-line message rather than as a runner's
    traceback, and deterministic data errors are not retried; the first failed
    recording in the plan's order is raised, after the others have converted.
    """
    beam = import_beam()
    from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

    prefix, coder = os.path.join(incomplete, "summaries"), beam.coders.PickleCoder()
    with beam.Pipeline(options=PipelineOptions(list(beam_options))) as pipeline:
        _ = (pipeline
             | "Recordings" >> beam.Create(list(enumerate(jobs)))
             | "Convert" >> beam.Map(_work_or_error)
             | "Summaries" >> beam.io.WriteToTFRecord(prefix, coder=coder))
    import tensorflow as tf  # noqa: PLC0415

    records = tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(prefix + "*"))).as_numpy_iterator()
    results = {index: (summary, error) for index, summary, error in map(coder.decode, records)}
    for index in range(len(jobs)):
        _, error = results[index]
        if error is not None:
            raise DataError(error)
    return [results[index][0] for index in range(len(jobs))]


def _work_or_error(indexed_job) -> tuple[int, _Summary | None, str | None]:
    """``(index, summary, None)``, or ``(index, None, message)`` for a recording that cannot be converted."""
    index, job = indexed_job
    try:
        return index, _work(job), None
    except DataError as e:
        return index, None, str(e)


def _metadata(kept, summaries, plan, cfg, label_names, source) -> dict:
    recordings = list(kept["recordings"])
    for s, (_, path) in zip(summaries, plan):
        entry = {"recording_id": s.recording_id, "partition": s.partition, "shard": os.path.basename(path),
                 "num_frames": s.num_frames}
        if "face" in cfg.modalities:
            entry["face_found_ratio"] = s.faces_found / max(s.num_frames, 1)  # the main track's coverage
            if s.face_tracks is not None:
                entry["face_tracks"] = s.face_tracks
        if s.label_sum is not None:
            entry["label_means"] = dict(zip(label_names, (s.label_sum / s.num_frames).tolist()))
        recordings.append(entry)
    new = {}
    for p in sorted({s.partition for s in summaries}):
        of_p = [s for s in summaries if s.partition == p]
        labelled = bool(of_p[0].label_names)  # all or none of a partition's recordings are (_label_names)
        new[p] = {"label_names": list(label_names) if labelled else [], "labelled": labelled,
                  **_stats(of_p, label_names)}
    partitions = dict(sorted({**kept["partitions"], **new}.items()))
    return {
        "metadata_version": metadata.VERSION,
        "schema_version": schema.SCHEMA_VERSION,
        "generation": uuid.uuid4().hex,  # new every run: tells a committed conversion from one that was not
        "source": source,
        "modalities": list(cfg.modalities),
        # the labelled partitions' names, which _label_names made sure agree
        "label_names": next((info["label_names"] for info in partitions.values() if info["labelled"]), []),
        "time_base": dataclasses.asdict(cfg.time_base),
        "samples_per_frame": cfg.time_base.samples_per_frame,
        "face": dataclasses.asdict(cfg.face),
        "partitions": partitions,
        "recordings": sorted(recordings, key=lambda r: (r["partition"], r["recording_id"])),
    }


def _commit(output_dir, jobs, plan, meta):
    """Replaces the converted partitions' shards and ``metadata.json``: all or nothing.

    1. the journal (the new metadata's generation, the new and the old shard
       names) is written into ``.backup/``;
    2. the old shards of the converted partitions are moved into ``.backup/``;
    3. the new shards are moved from ``.incomplete/`` into place;
    4. ``metadata.json`` is replaced (``os.replace``): the commit point;
    5. ``.backup/`` is deleted.
    An exception before 4 rolls back (``_roll_back``) and leaves the folder as
    it was; a kill is repaired by the next run (``_recover``). Every step is a
    rename within ``output_dir``, so none copies data.
    """
    converting = {r.partition for r, _ in plan}
    journal = {"generation": meta["generation"],
               "new_shards": [os.path.basename(final) for _, final in plan],
               "old_shards": sorted(n for n in os.listdir(output_dir)
                                    if (parsed := schema.parse_shard_name(n)) and parsed[0] in converting)}
    backup = os.path.join(output_dir, metadata.BACKUP)
    try:
        os.mkdir(backup)
        metadata.write_journal(output_dir, journal)
        for name in journal["old_shards"]:
            os.replace(os.path.join(output_dir, name), os.path.join(backup, name))
        for (_, _, tmp), (_, final) in zip(jobs, plan):
            os.replace(tmp, final)
        metadata.write(output_dir, meta)
    except BaseException as e:
        _roll_back(output_dir, journal)
        if isinstance(e, OSError):
            raise DataError(f"cannot replace the output in {output_dir}: {e}; the previous output is kept") from e
        raise
    _discard_backup(output_dir)


def _roll_back(output_dir, journal):
    """Undoes steps 1-3 of ``_commit``, however far they got; running it again is harmless."""
    backup = os.path.join(output_dir, metadata.BACKUP)
    old = set(journal["old_shards"])
    for name in journal["new_shards"]:
        # a new shard named like an old one is replaced by the old one below
        if name not in old and os.path.exists(os.path.join(output_dir, name)):
            os.remove(os.path.join(output_dir, name))
    for name in journal["old_shards"]:
        if os.path.exists(os.path.join(backup, name)):  # not there: never moved, still in place
            os.replace(os.path.join(backup, name), os.path.join(output_dir, name))
    shutil.rmtree(backup, ignore_errors=True)


def _discard_backup(output_dir):
    # After the commit point: a failure here leaves a backup that the next run deletes.
    shutil.rmtree(os.path.join(output_dir, metadata.BACKUP), ignore_errors=True)


def _recover(output_dir):
    """Repairs what a conversion killed during ``_commit`` left: rolls back an
    uncommitted one, deletes the backup of a committed one."""
    if not os.path.isdir(os.path.join(output_dir, metadata.BACKUP)):
        return
    journal = metadata.pending_journal(output_dir)
    if journal is not None:
        _roll_back(output_dir, journal)
    # No journal: killed before it was written, when no shard had moved yet.
    _discard_backup(output_dir)
