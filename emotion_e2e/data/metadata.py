"""``metadata.json``, the index of a converted corpus: the one place that reads and writes it.

The converter writes it last; training, evaluation and the tools read it. Its
layout is documented in ``tfrecords/README.md``.

Replacing it is the commit point of a conversion (``convert._commit``). While
a conversion replaces shards, a journal in the hidden ``.backup/`` folder
holds the ``generation`` id of the metadata it is about to write: a journal
whose generation ``metadata.json`` does not have belongs to a conversion that
has not committed (in progress, failed or killed), and ``read`` refuses the
folder until the next conversion has rolled it back.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from emotion_e2e.data import names, schema
from emotion_e2e.errors import DataError, io_reason

FILENAME = "metadata.json"
# 2: per-partition label_names and the generation id. Version 1 files (without
# "metadata_version") are read as version 2.
VERSION = 2
BACKUP = ".backup"  # the replaced shards during a commit, and the journal
JOURNAL = "journal.json"
# Face crop settings ("face", FaceConfig's fields) added since files of this version were first
# written, with the value their crops were cut with: a file without them reads as having them.
FACE_SETTINGS_ADDED = {"align": "none"}


def path(directory: str) -> str:
    return os.path.join(directory, FILENAME)


def read(directory: str, missing_ok: bool = False) -> dict | None:
    """The metadata of the converted corpus in ``directory``, in the version 2 layout (with every
    ``FACE_SETTINGS_ADDED``).

    Raises DataError naming the file when it is missing (unless ``missing_ok``:
    then None), not valid JSON (e.g. truncated), of another schema or metadata
    version, when a partition, recording id or shard in it is not a name the
    converter writes (a hand-edited file: they become file names), or when a
    conversion that has not committed left the folder half-replaced (a pending journal).
    """
    journal = pending_journal(directory)
    if journal is not None:
        raise DataError(f"{directory}: a conversion into it was interrupted before it finished "
                        f"({os.path.join(directory, BACKUP, JOURNAL)}): run emotion_e2e.prepare into it again, "
                        f"which first restores the previous output")
    p = path(directory)
    if not tf.io.gfile.exists(p):
        if missing_ok:
            return None
        raise DataError(f"{p} not found: is {directory} the output of emotion_e2e.prepare?")
    meta = _load(p)
    if not isinstance(meta, dict) or meta.get("schema_version") != schema.SCHEMA_VERSION:
        found = meta.get("schema_version") if isinstance(meta, dict) else type(meta).__name__
        raise DataError(f"{p}: schema_version {found!r}, this code reads schema version "
                        f"{schema.SCHEMA_VERSION}: re-run emotion_e2e.prepare")
    version = meta.get("metadata_version", 1)
    if version == 1:
        meta = _from_version_1(meta)
    elif version != VERSION:
        raise DataError(f"{p}: metadata_version {version!r}, this code reads versions 1 and {VERSION}: "
                        f"re-run emotion_e2e.prepare")
    _check_names(p, meta)
    if isinstance(meta.get("face"), dict):
        meta["face"] = {**FACE_SETTINGS_ADDED, **meta["face"]}
    return meta


def _check_names(p, meta):
    """DataError naming ``p`` and the entry for a partition, recording id or shard that is not
    a name the converter writes."""
    for name in meta["partitions"]:
        names.check_partition(name, f"{p}, partitions")
    for k, e in enumerate(meta["recordings"]):
        where = f"{p}, recordings[{k}]"
        names.check_recording_id(e.get("recording_id"), where)
        partition = names.check_partition(e.get("partition"), where)
        parsed = schema.parse_shard_name(e.get("shard")) if isinstance(e.get("shard"), str) else None
        if parsed is None or parsed[0] != partition:
            raise DataError(f"{where}: shard {e.get('shard')!r} is not a shard name of partition {partition} "
                            f"(expected {schema.SHARD_PATTERN})")


def _load(p):
    try:
        with tf.io.gfile.GFile(p) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{p} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}): "
                        f"re-run emotion_e2e.prepare") from e
    except (OSError, tf.errors.OpError) as e:
        raise DataError(f"cannot read {p}: {io_reason(e)}") from e


def _from_version_1(meta):
    """Version 1 had one ``label_names`` for all partitions, which only its labelled ones carry,
    and called the face modality "video" (the records themselves are the same)."""
    partitions = {p: {"label_names": meta["label_names"] if info["labelled"] else [], **info}
                  for p, info in meta["partitions"].items()}
    modalities = ["face" if m == "video" else m for m in meta["modalities"]]
    return {"metadata_version": VERSION, **meta, "generation": None, "partitions": partitions,
            "modalities": modalities}


def write(directory: str, meta: dict) -> None:
    """Replaces ``directory``'s metadata atomically: readers see the old file or the new one."""
    _write_json(path(directory), meta)


def _write_json(p, content):
    tmp = os.path.join(os.path.dirname(p), "." + os.path.basename(p) + ".part")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(content, f, indent=2)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_journal(directory: str, journal: dict) -> None:
    """Writes ``.backup/journal.json`` atomically; ``journal["generation"]`` is the metadata's to come."""
    _write_json(os.path.join(directory, BACKUP, JOURNAL), journal)


def pending_journal(directory: str) -> dict | None:
    """The journal of a conversion into ``directory`` that has not committed, or None.

    A journal whose generation ``metadata.json`` has is that of a committed
    conversion killed while deleting its backup: nothing is pending.
    """
    p = os.path.join(directory, BACKUP, JOURNAL)
    if not tf.io.gfile.exists(p):
        return None
    journal = _load(p)
    meta = _load(path(directory)) if tf.io.gfile.exists(path(directory)) else None
    committed = isinstance(meta, dict) and meta.get("generation") == journal["generation"]
    return None if committed else journal


def partition(meta: dict, name: str) -> dict:
    """The entry of partition ``name``: counts, ``label_names``, ``labelled``, label statistics."""
    if name not in meta["partitions"]:
        raise DataError(f"partition {name!r} is not in the metadata; partitions: {sorted(meta['partitions'])}")
    return meta["partitions"][name]


def label_names(meta: dict, name: str) -> tuple[str, ...]:
    """The label names of partition ``name``; empty for an unlabelled partition."""
    return tuple(partition(meta, name)["label_names"])


def recordings(meta: dict, name: str) -> list[dict]:
    """The recordings of partition ``name`` in shard order: ``recording_id``, ``shard``, ``num_frames``, ..."""
    partition(meta, name)
    return [r for r in meta["recordings"] if r["partition"] == name]


def verify(directory: str, meta: dict, partitions) -> None:
    """Checks ``meta`` against the shards of ``partitions`` in ``directory``, cheaply.

    Every listed shard exists, no unlisted shard of those partitions does, the
    partition totals add up, and the first record of each shard (one record per
    shard: the check does not grow with the corpus' length) has the recording
    id, partition and num_frames that ``meta`` lists. Raises DataError naming the
    shard and both values.
    """
    p_meta = path(directory)
    on_disk = {}
    for name in tf.io.gfile.listdir(directory):
        parsed = schema.parse_shard_name(name)
        if parsed:
            on_disk.setdefault(parsed[0], set()).add(name)
    for p in partitions:
        again = f"convert partition {p} again"
        entries = recordings(meta, p)
        for e in entries:
            shard = os.path.join(directory, e["shard"])
            if not tf.io.gfile.exists(shard) or tf.io.gfile.isdir(shard):
                raise DataError(f"{shard} (recording {e['recording_id']}, partition {p}) is listed in {p_meta} "
                                f"but does not exist; {again}")
        unlisted = sorted(on_disk.get(p, set()) - {e["shard"] for e in entries})
        if unlisted:
            raise DataError(f"{os.path.join(directory, unlisted[0])} is a shard of partition {p} that {p_meta} "
                            f"does not list; {again}")
        for e in entries:
            shard = os.path.join(directory, e["shard"])
            got = _first_record(shard)
            for key, want in ((schema.RECORDING_ID, e["recording_id"]), (schema.PARTITION, p),
                              (schema.NUM_FRAMES, e["num_frames"])):
                if got[key] != want:
                    raise DataError(f"{shard}: {key} {got[key]!r} in its first record, {want!r} in {p_meta}; {again}")
        info = partition(meta, p)
        for key, total in (("num_recordings", len(entries)), ("num_frames", sum(e["num_frames"] for e in entries))):
            if info[key] != total:
                raise DataError(f"{p_meta}: partition {p} has {key} {info[key]} but its recordings add up to "
                                f"{total}; {again}")


def _first_record(shard: str) -> dict:
    """Recording id, partition and num_frames of a shard's first record."""
    feats = schema.first_features(shard)
    try:
        return {schema.RECORDING_ID: feats[schema.RECORDING_ID].bytes_list.value[0].decode(),
                schema.PARTITION: feats[schema.PARTITION].bytes_list.value[0].decode(),
                schema.NUM_FRAMES: feats[schema.NUM_FRAMES].int64_list.value[0]}
    except IndexError as e:
        raise DataError(f"TFRecord file {shard}: its first record lacks {schema.RECORDING_ID}, "
                        f"{schema.PARTITION} or {schema.NUM_FRAMES}") from e
