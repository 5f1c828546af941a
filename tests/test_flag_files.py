"""Every flag file in flags/ parses with train.py's flags into a valid configuration, and the demo
stages are what the demo promises: long windows where the LSTMs matter, 150-frame evaluation."""

import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = "flags/demo.flags"  # read by the demo stages' files, not a run of its own
FLAG_FILES = sorted(os.path.relpath(f, ROOT) for f in glob.glob(os.path.join(ROOT, "flags", "*.flags")))
RUN_FILES = [f for f in FLAG_FILES if f != SHARED]

# One process for all files: train.py's flags are parsed from each file in turn (the data dir
# is the test corpus, given after the file as the Makefile does) and the resolved config printed.
RESOLVE = """
import json, sys
from absl import flags
import train
from emotion_e2e import config
from emotion_e2e.data import metadata

data_dir, files = sys.argv[1], sys.argv[2:]
meta = metadata.read(data_dir)
out = {}
for f in files:
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train.py", f"--flagfile={f}", f"--data_dir={data_dir}"])
    out[f] = {"cfg": config.to_dict(train.config_from_flags(meta)), "run_dir": flags.FLAGS.run_dir}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def resolved(corpus):
    r = subprocess.run([sys.executable, "-c", RESOLVE, corpus, *RUN_FILES], capture_output=True, text=True,
                       cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_every_flag_file_resolves_to_a_valid_config(resolved):
    assert set(resolved) == set(RUN_FILES) and len(RUN_FILES) == 6 and SHARED in FLAG_FILES
    for f, r in resolved.items():
        assert r["run_dir"] and r["cfg"]["data_dir"], f
        if "demo_" in f:
            assert f"--flagfile={SHARED}" in open(os.path.join(ROOT, f)).read().splitlines(), f


def test_the_demo_stages(resolved):
    audio, face, multi = (resolved[f"flags/demo_{s}.flags"]["cfg"] for s in ("audio", "face", "multimodal"))
    assert [resolved[f"flags/demo_{s}.flags"]["run_dir"] for s in ("audio", "face", "multimodal")] == [
        "runs/demo_audio", "runs/demo_face", "runs/demo_multimodal"]
    assert audio["inputs"]["modalities"] == ["audio"] and face["inputs"]["modalities"] == ["face"]
    assert multi["inputs"]["modalities"] == ["audio", "face"]
    assert multi["init_from"] == ["runs/demo_audio", "runs/demo_face"]
    # The stages with LSTMs over the voice train on at least 2 s; every stage is evaluated on 6 s.
    assert audio["reader"]["seq_len"] >= 50 and multi["reader"]["seq_len"] >= 50
    assert all(c["reader"]["eval_seq_len"] == 150 for c in (audio, face, multi))
    # The shared flags reach every stage.
    assert {c["model"]["face"]["backbone"] for c in (audio, face, multi)} == {"resnet10"}
    assert {c["model"]["audio"]["input_dropout"] for c in (audio, face, multi)} == {0.0}


def test_the_paper_experiments_use_the_paper_configuration(resolved):
    for stage in ("audio", "face", "multimodal"):
        cfg = resolved[f"flags/recola_{stage}.flags"]["cfg"]
        assert cfg["model"]["face"]["backbone"] == "resnet50"
        assert (cfg["reader"]["seq_len"], cfg["reader"]["eval_seq_len"], cfg["reader"]["batch_size"]) == (150, 150, 2)
        assert cfg["optimizer"]["learning_rate"] == 1e-4 and cfg["model"]["audio"]["l2"] == 1e-4
        assert cfg["reader"]["augment"]["per"] == "frame"
