"""One writer per folder, with real processes: a second conversion, training or evaluation into a
folder that another process writes is refused with one line and changes nothing there; a killed
writer's lock is released, so the next run succeeds."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from emotion_e2e import locking
from emotion_e2e import run_dir as run_lib
from emotion_e2e.data import convert, metadata
from emotion_e2e.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = ["--source=demo", "--demo_train=2", "--demo_dev=1", "--demo_seconds=2"]
TRAIN = ["--modalities=audio", "--epochs=1", "--steps_per_epoch=1", "--seq_len=4", "--eval_seq_len=10",
         "--batch_size=2", "--lstm_units=4", "--audio_dropout=0"]
WAIT = 300  # seconds a test waits for a process to reach the state it needs


def python(*args) -> list[str]:
    return [sys.executable, *args]


def run(args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT, **kwargs)


def prepare(out, seed, *extra) -> list[str]:
    return python("-m", "emotion_e2e.prepare", *DEMO, f"--seed={seed}", f"--output_dir={out}", *extra)


def snapshot(d):
    """Every file under ``d``, hidden ones included: ``{relative path: bytes}``."""
    return {os.path.relpath(os.path.join(root, n), d): open(os.path.join(root, n), "rb").read()
            for root, _, names in os.walk(d) for n in names}


def shards(d):
    return {n: b for n, b in snapshot(d).items() if n.endswith(".tfrecord")}


def without_generation(meta):
    return {k: v for k, v in meta.items() if k != "generation"}


def wait_for(condition, proc, what):
    deadline = time.monotonic() + WAIT
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{what} never happened: {proc.communicate()[1][-3000:]}")
        time.sleep(0.01)


def assert_refused(r, folder, holder_pid):
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and lines, r.stderr[-3000:]
    assert lines[-1].startswith("error: ") and f" {folder} is locked by another writer, pid {holder_pid} " in (
        lines[-1]) and "wait for it to end, or use another --" in lines[-1], r.stderr[-3000:]
    assert "Traceback" not in r.stderr


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """``clean(seed)``: the folder of an undisturbed conversion of the tiny demo corpus."""
    folders = {}

    def get(seed):
        if seed not in folders:
            folders[seed] = str(tmp_path_factory.mktemp(f"clean{seed}"))
            r = run(prepare(folders[seed], seed))
            assert r.returncode == 0, r.stderr[-3000:]
        return folders[seed]

    return get


def test_a_second_conversion_into_a_folder_being_written_is_refused_and_the_first_is_clean(clean, tmp_path):
    out = str(tmp_path / "out")
    first = subprocess.Popen(prepare(out, 1), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lock = locking.lock_path(out)
        wait_for(lambda: os.path.exists(lock) and open(lock).read().endswith("\n"), first, "the first run's lock")
        first.send_signal(signal.SIGSTOP)  # the first holds the lock for as long as the second runs
        before = snapshot(out)
        second = run(prepare(out, 2))
        assert_refused(second, out, first.pid)
        assert "output directory" in second.stderr.splitlines()[-1]
        assert snapshot(out) == before
        first.send_signal(signal.SIGCONT)
        _, stderr = first.communicate(timeout=600)
    finally:
        first.kill()
    assert first.returncode == 0, stderr[-3000:]
    assert shards(out) == shards(clean(1))
    assert without_generation(metadata.read(out)) == without_generation(metadata.read(clean(1)))
    assert sorted(os.listdir(out)) == sorted(os.listdir(clean(1)))  # no lock file, no hidden folder left


def test_a_conversion_killed_while_it_converts_leaves_a_lock_the_next_run_takes_over(clean, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(prepare(out, 1), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    incomplete = out / convert.INCOMPLETE
    try:
        wait_for(lambda: incomplete.is_dir() and any(n.endswith(".part") for n in os.listdir(incomplete)), proc,
                 "a shard being written")
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert f"pid {proc.pid} " in (out / locking.LOCK).read_text()  # the killed holder's stale lock file
    r = run(prepare(out, 1))
    assert r.returncode == 0, r.stderr[-3000:]
    assert shards(out) == shards(clean(1))
    assert without_generation(metadata.read(str(out))) == without_generation(metadata.read(clean(1)))
    assert sorted(os.listdir(out)) == sorted(os.listdir(clean(1)))


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A tiny run trained by train.py, and the command that trained it."""
    run_dir = str(tmp_path_factory.mktemp("run") / "run")
    command = python("train.py", f"--data_dir={corpus}", f"--run_dir={run_dir}", *TRAIN)
    r = run(command)
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir, command


def test_each_cli_refuses_a_folder_whose_lock_another_process_holds_and_changes_nothing(clean, trained, tmp_path):
    run_dir, train_command = trained
    data = str(tmp_path / "data")
    shutil.copytree(clean(1), data)
    eval_dir = run_lib.eval_dir(run_dir, "dev")
    for folder, command in ((data, prepare(data, 2)),  # another seed into a finished conversion
                            (run_dir, train_command),  # the same command again: it would resume
                            (eval_dir, python("eval.py", f"--run_dir={run_dir}"))):
        with locking.hold(folder, ConfigError):
            before = snapshot(folder)
            r = run(command)
            assert_refused(r, folder, os.getpid())
            assert snapshot(folder) == before, command
    # free again, each runs
    r = run(python("eval.py", f"--run_dir={run_dir}"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.path.exists(os.path.join(eval_dir, run_lib.REPORT)) and not os.path.exists(locking.lock_path(eval_dir))


def test_evaluating_a_run_while_it_trains_is_allowed(trained):
    run_dir, _ = trained
    with locking.hold(run_dir, ConfigError):  # as train.py holds it
        r = run(python("eval.py", f"--run_dir={run_dir}", "--partition=train", "--plots=false"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.path.exists(run_lib.report_path(run_dir, "train"))


def test_a_folder_with_a_url_scheme_is_not_locked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with locking.hold("ram://locks/a", ConfigError), locking.hold("ram://locks/a", ConfigError):
        assert os.listdir(tmp_path) == []  # nothing local stands for it


def test_a_file_system_that_takes_no_lock_gets_a_warning_and_the_block_runs(tmp_path, monkeypatch, capsys):
    """Some NFS and FUSE mounts refuse flock (ENOLCK, EOPNOTSUPP): no local file system here does,
    so flock is made to refuse as they do."""
    def refuse(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(locking.fcntl, "flock", refuse)
    folder = tmp_path / "run"
    with locking.hold(str(folder), ConfigError, what="run directory"):
        (folder / "written").write_text("yes")
    assert capsys.readouterr().err == (f"warning: run directory {folder} cannot be locked (No locks available: its "
                                       f"file system takes no locks): make sure no other process writes to it "
                                       f"meanwhile\n")
    assert (folder / "written").read_text() == "yes"
