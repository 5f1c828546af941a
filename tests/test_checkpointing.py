"""A run killed at any instant resumes: SIGKILL after a step backup, inside a backup write and
inside a checkpoint write; the resumed run ends where an uninterrupted one with the same seed
does, and history.csv holds each epoch once, marking the epochs a run resumed mid-way. The
killed runs' locks are released (each next run takes the run directory over). Also: run and data
directories on TF's ram://."""

import json
import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from disk_fixtures import one_line_error, snapshot
from emotion_e2e import checkpointing, compare, config, evaluation, training
from emotion_e2e import run_dir as run_lib
from emotion_e2e.errors import ConfigError
from emotion_e2e.models import build_model
from test_training import train_cfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "tests", "train_driver.py")
STEPS, EPOCHS, EVERY = 6, 2, 2  # backups at global steps 2, 4, 6 (epoch end), 8, 10, 12 (epoch end)


@pytest.fixture(scope="module")
def cfg(corpus):
    return train_cfg(corpus, ("audio",), steps_per_epoch=STEPS, epochs=EPOCHS, backup_every_steps=EVERY)


@pytest.fixture(scope="module")
def cfg_file(cfg, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(json.dumps(config.to_dict(cfg)))
    return str(path)


def drive(cfg_file, run, *args, expect_killed=False):
    r = subprocess.run([sys.executable, DRIVER, cfg_file, run, *args], capture_output=True, text=True, timeout=600,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    if expect_killed:
        assert r.returncode == -9, r.stderr[-3000:]
    else:
        assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def final_weights(path):
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files) - 1)], int(f["iterations"])


@pytest.fixture(scope="module")
def uninterrupted(cfg_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    drive(cfg_file, str(out / "run"), f"--weights_out={out / 'w.npz'}")
    return final_weights(out / "w.npz")


def assert_same_end(run_weights, uninterrupted):
    (got, got_steps), (want, want_steps) = run_weights, uninterrupted
    assert got_steps == want_steps == STEPS * EPOCHS
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def history_epochs(run):
    return list(pd.read_csv(run_lib.history_path(run))["epoch"])


def resumed_at_steps(run):
    """history.csv's ``resumed_at_step`` column: the steps of a row's epoch done before a resume, or ''."""
    return [r[checkpointing.RESUMED_AT_STEP] for r in run_lib.read_history(run_lib.history_path(run))]


def test_sigkill_after_a_step_backup_resumes_at_that_step_with_the_optimizer_state(cfg, cfg_file, uninterrupted,
                                                                                   tmp_path):
    run = str(tmp_path / "run")
    drive(cfg_file, run, "--kill=after_backup:4", expect_killed=True)  # epoch 1, after its step 4
    state = json.loads(open(os.path.join(run_lib.backup_dir(run), checkpointing.STATE)).read())
    assert state == {"epoch": 0, "step": 4, "global_step": 4, "weights": "step-000000004.weights.h5"}
    assert not os.path.exists(run_lib.history_path(run))  # no epoch finished
    # what a restart restores: the step counter and Adam's moments as saved, not reset
    model = build_model(cfg.model, cfg.inputs)
    training.compile_model(model, cfg)
    assert checkpointing.Backup(run_lib.backup_dir(run), STEPS).restore(model) == (0, 4)
    assert int(model.optimizer.iterations.numpy()) == 4
    saved = []
    with h5py.File(os.path.join(run_lib.backup_dir(run), state["weights"])) as f:
        f["optimizer"].visititems(lambda name, obj: saved.append(obj[()]) if isinstance(obj, h5py.Dataset) else None)
    restored = [v.numpy() for v in model.optimizer.variables]
    assert len(saved) == len(restored) > 4
    assert sum(np.any(a != 0) for a in restored) > len(restored) // 2  # moments, not zeros
    for a in restored:
        assert any(a.shape == b.shape and np.array_equal(a, b) for b in saved)
    # the same command again resumes there (the rest of epoch 1, then epoch 2) and ends where the
    # uninterrupted run does, with one history row per epoch
    out = drive(cfg_file, run, f"--weights_out={tmp_path / 'w.npz'}")
    assert "resuming epoch 1 at step 5 of 6" in out
    assert_same_end(final_weights(tmp_path / "w.npz"), uninterrupted)
    assert history_epochs(run) == [0, 1]
    # epoch 1's training loss and metrics cover its last 2 steps only: its row says so; epoch 2 was whole
    assert resumed_at_steps(run) == ["4", ""]


def test_kills_inside_backup_and_checkpoint_writes_leave_a_resumable_run(cfg_file, uninterrupted, tmp_path):
    run = str(tmp_path / "run")
    best = run_lib.checkpoint_path(run, "best")
    # the 2nd backup write (step 4) is cut half-way: the step-2 backup stays the one to resume from
    drive(cfg_file, run, "--kill=in_backup:2", expect_killed=True)
    state = json.loads(open(os.path.join(run_lib.backup_dir(run), checkpointing.STATE)).read())
    assert state["global_step"] == 2
    # the restart's 3rd checkpoint write (best or last of the 2nd epoch) is cut half-way
    out = drive(cfg_file, run, "--kill=in_save:3", expect_killed=True)
    assert "resuming epoch 1 at step 3 of 6" in out
    assert any(n.startswith(".partial-") for n in os.listdir(os.path.dirname(best)))
    run_lib.load_checkpoint(run, "best")  # the previous best.keras is whole
    run_lib.load_checkpoint(run, "last")
    assert history_epochs(run) == [0]
    drive(cfg_file, run, f"--weights_out={tmp_path / 'w.npz'}")
    assert_same_end(final_weights(tmp_path / "w.npz"), uninterrupted)
    assert history_epochs(run) == [0, 1]
    assert resumed_at_steps(run) == ["2", "4"]  # both epochs were finished by a resumed run
    assert not [n for _, _, names in os.walk(run) for n in names if n.startswith(".partial-")]
    assert sorted(os.listdir(run_lib.backup_dir(run))) == [checkpointing.STATE, "step-000000012.weights.h5"]


def test_training_reads_and_writes_through_tf_gfile(corpus, tmp_path):
    data, run = "ram://corpus", "ram://runs/audio"
    tf.io.gfile.makedirs(data)
    for name in os.listdir(corpus):
        if not name.startswith("."):
            tf.io.gfile.copy(os.path.join(corpus, name), f"{data}/{name}", overwrite=True)
    cfg = train_cfg(data, ("audio",), steps_per_epoch=2, backup_every_steps=1)
    history = training.train(cfg, run, verbose=0)
    assert history.epoch == [0]
    for path in (run_lib.config_path(run), run_lib.history_path(run), run_lib.checkpoint_path(run, "best"),
                 run_lib.checkpoint_path(run, "last"), os.path.join(run_lib.backup_dir(run), checkpointing.STATE)):
        assert tf.io.gfile.exists(path), path
    assert tf.io.gfile.glob(f"{run_lib.tensorboard_dir(run)}/*/events.out.tfevents.*")
    assert run_lib.load_config(run) == cfg
    assert run_lib.load_checkpoint(run).count_params() == history.model.count_params()
    assert training.train(cfg, run, verbose=0).epoch == []  # resumed from ram:// too: nothing left
    # eval.py's outputs go there too: report, a CSV and a plot per recording, the comparison reads it
    report = evaluation.evaluate_run(run, plots=True)
    out = run_lib.eval_dir(run, cfg.eval_partition)
    assert tf.io.gfile.exists(os.path.join(out, run_lib.REPORT))
    recordings = sorted(report["scores"]["recordings"])
    for kind, suffix in (("predictions", ".csv"), ("plots", ".png")):
        assert sorted(tf.io.gfile.listdir(os.path.join(out, kind))) == [f"{r}{suffix}" for r in recordings]
    csv = tf.io.gfile.GFile(os.path.join(out, "predictions", f"{recordings[0]}.csv")).read()
    assert csv.startswith("time,pred_arousal,gold_arousal")
    assert "audio" in compare.comparison_table([run], cfg.eval_partition)


# ---------------------------------------------------------------- a full disk

TRAIN_FLAGS = ("--modalities=audio", "--seq_len=4", "--eval_seq_len=10", "--batch_size=2", "--shuffle_buffer=8",
               "--lstm_layers=1", "--lstm_units=8", "--audio_dropout=0", "--audio_bn_momentum=0.9",
               "--steps_per_epoch=2", "--learning_rate=1e-3")
ROOM = 200_000  # for config.json and TensorBoard's events, not for a 1.3 MB .keras checkpoint
PAGE = os.sysconf("SC_PAGE_SIZE")  # tmpfs allocates whole pages


def train_cli(*args):
    return subprocess.run([sys.executable, "train.py", *TRAIN_FLAGS, *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=600)


def test_a_full_disk_during_a_checkpoint_write_is_one_line_and_keeps_the_run(corpus, small_disk):
    run = os.path.join(small_disk.path, "run")
    r = train_cli(f"--data_dir={corpus}", f"--run_dir={run}", "--epochs=1")
    assert r.returncode == 0, r.stderr[-3000:]
    before = snapshot(run)
    small_disk.fill(leave=ROOM)
    line = one_line_error(train_cli(f"--data_dir={corpus}", f"--run_dir={run}", "--epochs=2"))
    assert re.fullmatch(rf"error: cannot write {re.escape(run)}/checkpoints/(best|last)\.keras: "
                        rf"No space left on device; the previous file is kept", line), line
    after = snapshot(run)
    # best.keras, last.keras, history.csv and the backup as they were, no .partial-* left; TensorBoard's
    # earlier event files too (the run's new ones are all it adds); config.json says 2 epochs now
    assert {n: after[n] for n in before if n != run_lib.CONFIG} == {n: b for n, b in before.items()
                                                                  if n != run_lib.CONFIG}
    assert run_lib.load_config(run).epochs == 2
    assert all(n.startswith(run_lib.TENSORBOARD + os.sep) for n in set(after) - set(before)), sorted(after)


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # no "Exception ignored" either
def test_a_full_disk_during_a_backup_or_a_history_write_keeps_the_previous_ones(cfg, small_disk):
    model = build_model(cfg.model, cfg.inputs)
    training.compile_model(model, cfg)
    model.optimizer.build(model.trainable_variables)
    directory, history_csv = os.path.join(small_disk.path, "backup"), os.path.join(small_disk.path, "history.csv")
    backup, history = checkpointing.Backup(directory, STEPS), checkpointing.History(history_csv)
    for callback in (backup, history):
        callback.set_model(model)
    backup.step = STEPS
    backup.on_epoch_end(0)
    history.on_epoch_end(0, {"loss": 0.5})
    before = snapshot(small_disk.path)
    weights = os.path.getsize(os.path.join(directory, "step-000000006.weights.h5"))
    backup.step = 2 * STEPS
    message = "cannot write {}: No space left on device; the previous file is kept"
    small_disk.fill(leave=weights // 2)  # the weights file fails half-way
    with pytest.raises(ConfigError, match=re.escape(message.format(f"{directory}/step-000000012.weights.h5"))):
        backup.on_epoch_end(1)
    small_disk.fill()
    with pytest.raises(ConfigError, match=re.escape(message.format(history_csv))):
        history.on_epoch_end(1, {"loss": 0.25})
    assert {n: b for n, b in snapshot(small_disk.path).items() if n != small_disk.FILLER} == {
        n: b for n, b in before.items() if n != small_disk.FILLER}
    small_disk.fill(leave=-(-weights // PAGE) * PAGE)  # room for the weights, none for state.json after them
    with pytest.raises(ConfigError, match=re.escape(message.format(f"{directory}/{checkpointing.STATE}"))):
        backup.on_epoch_end(1)
    assert sorted(os.listdir(directory)) == [checkpointing.STATE, "step-000000006.weights.h5"]  # the new weights
    assert snapshot(directory) == {os.path.relpath(n, "backup"): b for n, b in before.items()
                                   if n.startswith("backup")}
