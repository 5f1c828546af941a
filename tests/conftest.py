"""Shared test set-up: quiet TensorFlow, small shapes everywhere."""

import os
import shutil
import subprocess

import pytest

from disk_fixtures import SmallDisk  # tests/data, on pytest's pythonpath

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """4 train and 2 dev demo recordings of 2 s, audio and faces: the tiny corpus the training,
    export and predict tests train their runs on (converted once; tests never modify it)."""
    from emotion_e2e.data import convert, demo, sources  # noqa: PLC0415

    out = str(tmp_path_factory.mktemp("tiny_demo"))
    cfg = demo.DemoConfig(num_train=4, num_dev=2, seconds=2)
    convert.convert(sources.demo_recordings(cfg), convert.ConvertConfig(), out, source="demo")
    return out


@pytest.fixture
def small_disk(tmp_path):
    """A 8 MB tmpfs mounted at ``tmp_path/disk`` for the test (``disk_fixtures.SmallDisk``; root
    only: skipped otherwise, or where mounting fails), unmounted after it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill the disk needs root")
    if not shutil.which("mount"):
        pytest.skip("no mount command here to mount a small tmpfs")
    path = tmp_path / "disk"
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield SmallDisk(str(path))
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)
