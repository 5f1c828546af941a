"""metadata.json (placeholder: replaced by the converter's version)."""

from __future__ import annotations

import json
import os

from emotion_e2e.errors import DataError

FILENAME = "metadata.json"


def read(directory: str) -> dict:
    path = os.path.join(directory, FILENAME)
    if not os.path.exists(path):
        raise DataError(f"{path} not found: is {directory} the output of emotion_e2e.prepare?")
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON (truncated?): {e}") from e


def label_names(meta: dict, partition: str) -> list:
    info = meta["partitions"][partition]
    return info.get("label_names", meta["label_names"] if info.get("labelled") else [])


def recordings(meta: dict, partition: str) -> list:
    return [r for r in meta["recordings"] if r["partition"] == partition]


def verify(directory: str, meta: dict, partitions) -> None:
    return None
