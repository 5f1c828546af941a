"""Data and run directories on an object store: train.py and eval.py stop within --storage_timeout
with one line when the store cannot be reached, and leave without the abort that tensorflow_io's S3
file system causes at exit. Local paths are never looked up.

Only 127.0.0.1 is ever contacted: S3_ENDPOINT names a local port, and the environment gives the
AWS SDK a region and dummy credentials, no profile files, no proxy, so it asks no other host."""

import http.server
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from emotion_e2e import run_dir as run_lib
from emotion_e2e.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 3  # --storage_timeout, seconds
STARTUP = 60  # seconds a CLI may take to import TensorFlow and start on a loaded machine
CLIS = {"train": ["train.py", "--data_dir=s3://bucket/corpus", "--run_dir=s3://bucket/run"],
        "eval": ["eval.py", "--run_dir=s3://bucket/run"]}


class NotFound(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that holds nothing: 404 to every request."""

    def do_HEAD(self):  # noqa: N802 - http.server's name
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args):
        pass


@pytest.fixture
def store(request):
    """``(kind, port)``: a closed local port, a listener that accepts and never answers, or an
    HTTP server answering 404."""
    kind = request.param
    if kind == "answering":
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield kind, server.server_address[1]
        server.shutdown()
        server.server_close()
        return
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if kind == "closed":
        listener.close()  # nothing listens on the port any more: connections are refused
    else:
        listener.listen(8)  # the kernel accepts connections; nobody ever reads or answers
    yield kind, port
    listener.close()


def run_with_s3(args, port, tmp_path):
    """Runs a CLI with S3 on 127.0.0.1:port; returns (exit status, stderr, seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and not k.lower().endswith("_proxy")}
    env.update(S3_ENDPOINT=f"http://127.0.0.1:{port}", S3_USE_HTTPS="0", AWS_REGION="us-east-1",
               AWS_ACCESS_KEY_ID="dummy", AWS_SECRET_ACCESS_KEY="dummy", AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=str(tmp_path / "no_aws_config"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no_aws_credentials"), NO_PROXY="*", no_proxy="*")
    start = time.monotonic()
    p = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=TIMEOUT + 2 * STARTUP)
    return p.returncode, p.stderr, time.monotonic() - start


@pytest.mark.parametrize("cli,store", [("train", "closed"), ("train", "silent"), ("eval", "closed"),
                                       ("eval", "silent")], indirect=["store"])
def test_an_unreachable_store_stops_the_cli_within_the_timeout_with_one_line(cli, store, tmp_path):
    _, port = store
    status, stderr, seconds = run_with_s3([*CLIS[cli], f"--storage_timeout={TIMEOUT}"], port, tmp_path)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert (f"the store could not be reached within {TIMEOUT} s (S3_ENDPOINT=http://127.0.0.1:{port})"
            in errors[0]), errors[0]
    assert "s3://bucket/" in errors[0]
    assert "pure virtual method called" not in stderr and "terminate called" not in stderr
    assert status == 1, stderr
    assert seconds < TIMEOUT + STARTUP


@pytest.mark.parametrize("store", ["answering"], indirect=True)
def test_a_reachable_store_without_the_corpus_says_not_found_and_exits_cleanly(store, tmp_path):
    """The abort at exit is not only the unreachable store's: any process that used s3:// had it."""
    _, port = store
    status, stderr, _ = run_with_s3([*CLIS["train"], f"--storage_timeout={TIMEOUT}"], port, tmp_path)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: s3://bucket/corpus/metadata.json not found: is s3://bucket/corpus the output of "
                      "emotion_e2e.prepare?"], stderr
    assert "pure virtual method called" not in stderr and status == 1


def test_only_network_stores_are_looked_up(tmp_path):
    assert [run_lib.is_remote(p) for p in ("s3://b/x", "gs://b/x", "hdfs://nn:8020/x", "az://a/c/x")] == [True] * 4
    assert [run_lib.is_remote(p) for p in (str(tmp_path), "runs/a", "ram://x", "file:///tmp/x", "", None)] == [False] * 6
    # a look-up could not finish within a nanosecond: local and in-process paths are not looked up
    run_lib.wait_for_storage(str(tmp_path / "nowhere"), "ram://nowhere", None, timeout=1e-9)
    with pytest.raises(ConfigError, match="positive number of seconds. Received: 0"):
        run_lib.wait_for_storage(str(tmp_path), timeout=0)
