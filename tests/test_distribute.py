"""Training under MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1 end with identical
weights, read disjoint shards, and only the chief writes; and each bad cluster input (malformed
TF_CONFIG, an unreachable chief, a batch that does not divide, a TPU that is not there) stops
with one line within seconds."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from test_training import train_cfg

from emotion_e2e import config, distribute
from emotion_e2e import run_dir as run_lib
from emotion_e2e.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(ROOT, "tests", "train_driver.py")
TIMEOUT = 300  # seconds a test waits for its processes, which are killed after it


def free_ports(n):
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def start(args, tf_config_value):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CONFIG": tf_config_value, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env)


@contextlib.contextmanager
def cluster(commands):
    """Starts one process per command, worker i with TF_CONFIG task i; kills whatever is left on exit."""
    ports = free_ports(len(commands))
    procs = [start(cmd, tf_config(ports, i)) for i, cmd in enumerate(commands)]
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def finish(procs):
    outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


def write_cfg(cfg, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict(cfg)))
    return str(path)


def test_two_workers_train_in_step_on_disjoint_shards_and_only_the_chief_writes(corpus, tmp_path):
    cfg = train_cfg(corpus, ("audio",), steps_per_epoch=3, strategy="multi_worker", connect_timeout=120,
                    backup_every_steps=2)
    cfg_file = write_cfg(cfg, tmp_path)
    runs = [str(tmp_path / "chief_run"), str(tmp_path / "worker_run")]
    with cluster([[DRIVER, cfg_file, runs[i], f"--weights_out={tmp_path / f'w{i}.npz'}"] for i in (0, 1)]) as procs:
        results = finish(procs)
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    weights = [np.load(tmp_path / f"w{i}.npz") for i in (0, 1)]
    assert int(weights[0]["iterations"]) == int(weights[1]["iterations"]) == 3
    assert len(weights[0].files) > 10
    for name in weights[0].files:  # the replicas stayed in step: bit for bit the same weights
        np.testing.assert_array_equal(weights[0][name], weights[1][name], err_msg=name)
    # each worker's input pipeline read its own half of the 4 training shards
    shards = []
    for i, (_, out, _) in enumerate(results):
        line = next(ln for ln in out.splitlines() if "input pipeline" in ln)
        assert line.startswith(f"worker {i} of 2: input pipeline {i} of 2 reads 2 shards: "), line
        shards.append(set(line.split(": ")[-1].split(", ")))
    assert not shards[0] & shards[1]
    assert shards[0] | shards[1] == {f"train-0000{k}-of-00004.tfrecord" for k in range(4)}
    chief, worker = runs
    for path in (run_lib.config_path(chief), run_lib.history_path(chief), run_lib.checkpoint_path(chief, "best"),
                 run_lib.checkpoint_path(chief, "last"), os.path.join(run_lib.backup_dir(chief), "state.json")):
        assert os.path.exists(path), path
    assert os.listdir(run_lib.tensorboard_dir(chief))
    assert not os.path.exists(worker) or not [f for _, _, fs in os.walk(worker) for f in fs]


@pytest.mark.parametrize("value, says", [
    (None, "needs the cluster in the TF_CONFIG environment variable"),
    ("{not json", "TF_CONFIG is not JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'has no "cluster" with a "worker"'),
    ('{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}', "must be a list of host:port"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', '"task" must name a job'),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "task index 2 but"),
    ('{"cluster": {"workers": ["a:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}', "unknown job"),
])
def test_a_malformed_tf_config_is_one_clear_error(value, says):
    with pytest.raises(ConfigError, match=None) as e:
        distribute.cluster_from_env({} if value is None else {"TF_CONFIG": value})
    assert says in str(e.value)


def run_train_cli(corpus, tmp_path, tf_config_value, *flags):
    cmd = [os.path.join(ROOT, "train.py"), f"--data_dir={corpus}", f"--run_dir={tmp_path / 'run'}",
           "--modalities=audio", "--lstm_layers=1", "--lstm_units=8", "--seq_len=4", "--eval_seq_len=10",
           "--steps_per_epoch=2", "--epochs=1", *flags]
    return start(cmd, tf_config_value)


def one_line_error(proc, within):
    began = time.monotonic()
    _, err = proc.communicate(timeout=TIMEOUT)
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert proc.returncode != 0 and len(lines) == 1, err[-3000:]
    assert time.monotonic() - began < within
    return lines[0]


def test_a_malformed_tf_config_stops_train_py(corpus, tmp_path):
    proc = run_train_cli(corpus, tmp_path, '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": 3}',
                         "--strategy=multi_worker")
    assert '"task" must name a job of the cluster' in one_line_error(proc, within=60)
    assert not os.path.exists(tmp_path / "run")


def test_a_worker_that_cannot_reach_the_chief_gives_up_after_connect_timeout(corpus, tmp_path):
    ports = free_ports(2)
    proc = run_train_cli(corpus, tmp_path, tf_config(ports, 1), "--strategy=multi_worker", "--connect_timeout=3")
    try:
        line = one_line_error(proc, within=60)
    finally:
        proc.kill()
    assert "worker 1 of the TF_CONFIG cluster" in line and "within 3 s (--connect_timeout)" in line
    assert f"127.0.0.1:{ports[0]}" in line


def test_a_global_batch_that_does_not_divide_over_the_workers_is_refused_by_both(corpus, tmp_path):
    with cluster([[os.path.join(ROOT, "train.py"), f"--data_dir={corpus}", f"--run_dir={tmp_path / f'run{i}'}",
                   "--modalities=audio", "--seq_len=4", "--eval_seq_len=10", "--batch_size=3",
                   "--strategy=multi_worker", "--connect_timeout=120"] for i in (0, 1)]) as procs:
        lines = [one_line_error(p, within=TIMEOUT) for p in procs]
    for line in lines:
        assert "--batch_size=3 is the global batch and must divide evenly over the 2 replicas" in line


@pytest.mark.parametrize("tpu, says", [("", "--strategy=tpu needs --tpu"), ("local", "--tpu=local: no TPU found")])
def test_a_missing_tpu_is_one_clear_error(corpus, tmp_path, tpu, says):
    proc = run_train_cli(corpus, tmp_path, "", "--strategy=tpu", f"--tpu={tpu}", "--connect_timeout=30")
    assert says in one_line_error(proc, within=60)
