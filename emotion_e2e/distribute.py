"""tf.distribute for training: the strategy named by ``--strategy``, a bounded wait for the
cluster, the chief, and the global batch split over the replicas (docs/design.md §12).

``multi_worker`` reads its cluster from ``TF_CONFIG``, as every TF launcher sets it::

    {"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 0}}

``tpu`` resolves ``--tpu`` (a name, ``local`` or a ``grpc://`` address) with TF's resolver.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys

import tensorflow as tf

from emotion_e2e.errors import ConfigError

TF_CONFIG = "TF_CONFIG"
_ADDRESS = re.compile(r"^[^\s:/]+:\d{1,5}$")
_TASK_TYPES = ("chief", "worker", "evaluator", "ps")


def cluster_from_env(environ=None) -> dict:
    """``TF_CONFIG`` parsed and checked: ``{"cluster": {job: [host:port, ...]}, "task": {"type", "index"}}``.
    Raises ConfigError saying what is wrong with it (not JSON, no workers, a task outside the
    cluster, an address that is not host:port) instead of letting TF wait for a cluster that
    cannot form."""
    environ = os.environ if environ is None else environ
    raw = environ.get(TF_CONFIG)
    if not raw:
        raise ConfigError(f"--strategy=multi_worker needs the cluster in the {TF_CONFIG} environment variable, "
                          f'e.g. {{"cluster": {{"worker": ["host0:12345", "host1:12345"]}}, '
                          f'"task": {{"type": "worker", "index": 0}}}}; it is not set')
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{TF_CONFIG} is not JSON ({e.msg} at column {e.colno}). Received: {raw[:200]}") from e
    cluster, task = (spec.get("cluster"), spec.get("task")) if isinstance(spec, dict) else (None, None)
    if not isinstance(cluster, dict) or not cluster.get("worker") and not cluster.get("chief"):
        raise ConfigError(f"{TF_CONFIG} has no \"cluster\" with a \"worker\" (or \"chief\") list. Received: {raw[:200]}")
    for job, addresses in cluster.items():
        if job not in _TASK_TYPES:
            raise ConfigError(f"{TF_CONFIG}: unknown job {job!r} in \"cluster\"; expected some of {_TASK_TYPES}")
        bad = [a for a in addresses if not isinstance(a, str) or not _ADDRESS.match(a)] if isinstance(
            addresses, list) else [addresses]
        if bad:
            raise ConfigError(f"{TF_CONFIG}: the {job!r} addresses must be a list of host:port. Received: {bad[0]!r}")
    if not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(task.get("index"), int):
        raise ConfigError(f"{TF_CONFIG}: \"task\" must name a job of the cluster ({sorted(cluster)}) and an "
                          f"integer index. Received: {task!r}")
    if not 0 <= task["index"] < len(cluster[task["type"]]):
        raise ConfigError(f"{TF_CONFIG}: task index {task['index']} but the {task['type']!r} job has "
                          f"{len(cluster[task['type']])} task(s)")
    return spec


_WATCHDOG = """
import os, signal, sys, time
parent, seconds, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
time.sleep(seconds)
sys.stderr.write("error: " + message + "\\n")
sys.stderr.flush()
os.kill(parent, signal.SIGKILL)
"""


@contextlib.contextmanager
def deadline(seconds: float, message: str):
    """Ends the process with ``error: message`` when the block has not finished within ``seconds``.

    Joining a cluster blocks inside TF's runtime holding the interpreter lock, where no Python
    thread, signal handler or exception can act, and the process ignores SIGTERM: a watchdog
    process prints the message and kills this one."""
    watchdog = subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(seconds), message],
                                stdin=subprocess.DEVNULL)
    try:
        yield
    finally:
        watchdog.kill()
        watchdog.wait()


def make_strategy(name: str, tpu: str = "", connect_timeout: float = 120.0) -> tf.distribute.Strategy:
    """The strategy ``name`` (``config.STRATEGIES``). ``multi_worker`` and ``tpu`` join their cluster
    within ``connect_timeout`` seconds or end the process naming what they waited for."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        spec = cluster_from_env()
        task = spec["task"]
        peers = [a for job in spec["cluster"].values() for a in job]
        with deadline(connect_timeout, f"{task['type']} {task['index']} of the {TF_CONFIG} cluster {peers} did not "
                                       f"form the cluster within {connect_timeout:g} s (--connect_timeout): is every "
                                       f"task started with the same cluster, and can each reach the others' ports?"):
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
            # The first collective is where the workers meet; it is part of the bounded wait.
            strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)
        return strategy
    if name == "tpu":
        if not tpu:
            raise ConfigError("--strategy=tpu needs --tpu: a TPU name, 'local' on a TPU VM, or a grpc://host:port address")
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        except (ValueError, OSError) as e:  # an unknown name: the metadata lookup fails
            raise ConfigError(f"--tpu={tpu}: no TPU found ({type(e).__name__}: {e})") from e
        with deadline(connect_timeout, f"--tpu={tpu}: the TPU at {resolver.master() or 'local'} did not answer within "
                                       f"{connect_timeout:g} s (--connect_timeout)"):
            try:
                tf.config.experimental_connect_to_cluster(resolver)
                tf.tpu.experimental.initialize_tpu_system(resolver)
            except (tf.errors.OpError, ValueError) as e:
                raise ConfigError(f"--tpu={tpu}: no TPU found: {str(e).splitlines()[0]}") from e
        return tf.distribute.TPUStrategy(resolver)
    raise ConfigError(f"unknown strategy {name!r}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run directory: the chief of a multi-worker cluster (or its
    worker 0), always a single-process strategy."""
    return bool(strategy.extended.should_checkpoint)


def task_name(strategy: tf.distribute.Strategy) -> str:
    """``worker 1 of 2`` for a multi-worker task, ``""`` otherwise (for log lines)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type or isinstance(strategy, tf.distribute.TPUStrategy):
        return ""
    return f"{resolver.task_type} {resolver.task_id} of {strategy.extended._num_workers}"  # noqa: SLF001


def check_batch(strategy: tf.distribute.Strategy, batch_size: int):
    """``--batch_size`` is the global batch: it must split evenly over the replicas in sync."""
    n = strategy.num_replicas_in_sync
    if batch_size % n:
        raise ConfigError(f"--batch_size={batch_size} is the global batch and must divide evenly over the "
                          f"{n} replicas in sync ({type(strategy).__name__}); use a multiple of {n}")


def build_for_fit(model, strategy: tf.distribute.Strategy, spec):
    """Builds the compiled ``model``'s loss, metrics and optimizer state from its input's ``spec`` (in
    ``strategy``'s scope), and makes Keras' ``fit`` work under a multi-worker strategy.

    Keras 3.13's ``fit`` fails twice under MultiWorkerMirroredStrategy: it builds the model by averaging
    its first batch across the workers, which fails for inputs that are dicts, and it averages each
    step's scalar logs across the workers along axis 0, which scalars do not have. The model is built
    here instead, and scalar logs are averaged as scalars; gradients and the epoch's metrics (summed
    over every replica of every worker) are Keras' own."""
    model._symbolic_build(data_batch=spec)  # noqa: SLF001
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None  # noqa: SLF001
        _average_scalar_logs_across_workers()


def _average_scalar_logs_across_workers():
    from keras.src.backend.tensorflow import trainer  # noqa: PLC0415

    keras_reduce = trainer.reduce_per_replica
    if getattr(keras_reduce, "scalar_safe", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)

        def one(v):
            local = strategy.experimental_local_results(v)[0] if isinstance(v, tf.distribute.DistributedValues) else v
            if multi_worker and reduction in ("auto", "mean") and getattr(local, "shape", None) == ():
                return strategy.reduce("MEAN", v, axis=None)
            return keras_reduce(v, strategy, reduction)

        return tf.nest.map_structure(one, values)

    reduce_per_replica.scalar_safe = True
    trainer.reduce_per_replica = reduce_per_replica
