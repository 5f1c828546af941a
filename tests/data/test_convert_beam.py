"""The Beam runner of the conversion (the beam extra): the local converter's output, its errors."""

import json
import os
import subprocess
import sys

import pytest

from emotion_e2e.data import convert, demo, metadata, sources
from emotion_e2e.errors import DataError
from records import FakeRecording
from test_convert import CFG, corpus, listing, snapshot, without_generation

# The engine of Beam's DirectRunner, in this process (FakeRecording is importable only here). The DirectRunner
# itself first downloads the Prism runner's binary, and runs on this engine where it cannot: tests fetch nothing.
DIRECT = ["--runner=FnApiRunner"]
TINY = demo.DemoConfig(num_train=2, num_dev=1, seconds=1.0)  # 3 recordings of 25 frames, audio and faces


def test_beam_conversion_of_a_demo_corpus_equals_the_local_one(tmp_path):
    recordings = sources.demo_recordings(TINY)
    local = convert.convert(recordings, convert.ConvertConfig(), str(tmp_path / "local"), source="demo")
    beam = convert.convert(recordings, convert.ConvertConfig(), str(tmp_path / "beam"), beam_options=DIRECT,
                           source="demo")
    assert listing(tmp_path / "beam") == listing(tmp_path / "local") == [
        "dev-00000-of-00001.tfrecord", "metadata.json", "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord"]  # and no hidden folder is left
    shards = {n: b for n, b in snapshot(tmp_path / "local").items() if n != metadata.FILENAME}
    assert {n: b for n, b in snapshot(tmp_path / "beam").items() if n != metadata.FILENAME} == shards
    assert without_generation(beam) == without_generation(local) and beam["generation"] != local["generation"]
    assert beam == metadata.read(str(tmp_path / "beam"))


def test_a_bad_recording_fails_the_beam_run_with_its_data_error_and_keeps_the_previous_output(tmp_path):
    bad = corpus(train_b=FakeRecording("train_b", "train", index=1, length=6, fail_at=4))
    with pytest.raises(DataError) as local:
        convert.convert(bad, CFG, str(tmp_path / "local"))
    convert.convert(corpus(), CFG, str(tmp_path / "beam"), beam_options=DIRECT)
    before = snapshot(tmp_path / "beam")
    with pytest.raises(DataError, match=r"^recording train_b, frame 4: injected failure$") as beam:
        convert.convert(bad, CFG, str(tmp_path / "beam"), beam_options=DIRECT)
    assert str(beam.value) == str(local.value)
    assert snapshot(tmp_path / "beam") == before


def test_without_apache_beam_the_error_names_the_extra_before_the_output_dir_is_touched(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "apache_beam", None)  # what an import without the beam extra sees
    with pytest.raises(ImportError, match=r"^the Beam runner needs Apache Beam, which is not installed: "
                                          r"pip install 'emotion_e2e\[beam\]' \(the beam extra; "):
        convert.convert(corpus(), CFG, str(tmp_path / "out"), beam_options=DIRECT)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"Received: workers=2, beam_options=\['--runner=FnApiRunner'\]"):
        convert.convert(corpus(), CFG, str(tmp_path / "out"), workers=2, beam_options=DIRECT)


# One process for every command line (TensorFlow and Beam are imported once): prepare.main runs on each in
# turn and what it printed or exited with is collected; "without beam" makes apache_beam unimportable.
PREPARE = """
import contextlib, io, json, sys
from absl import app, flags
from emotion_e2e import prepare

out = []
for args in json.loads(sys.argv[1]):
    if args == "without beam":
        sys.modules["apache_beam"] = None  # what an import sees without the beam extra
        continue
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["prepare", *args])
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            prepare.main(["prepare"])
        out.append(printed.getvalue())
    except (SystemExit, app.UsageError) as e:
        out.append(f"{type(e).__name__}: {e}")
print(json.dumps(out))
"""


def test_prepare_runner_flags(tmp_path):
    out = tmp_path / "demo"
    demo_args = ["--source=demo", f"--output_dir={out}", "--demo_train=1", "--demo_dev=1", "--demo_seconds=1"]
    runs = [[*demo_args, "--runner=beam", "--beam_options=--runner=FnApiRunner,--direct_num_workers=1"],
            [*demo_args, "--runner=beam", "--workers=2"],
            [*demo_args, "--beam_options=--runner=FnApiRunner"],
            "without beam",
            [*demo_args, "--runner=beam"]]
    r = subprocess.run([sys.executable, "-c", PREPARE, json.dumps(runs)], capture_output=True, text=True,
                       env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CI="true"))
    assert r.returncode == 0, r.stderr[-3000:]
    converted, workers, options, no_beam = json.loads(r.stdout.strip().splitlines()[-1])
    assert "train: 1 recordings, 25 frames" in converted and "dev: 1 recordings, 25 frames" in converted
    assert json.loads((out / "metadata.json").read_text())["source"] == "demo"
    assert workers == ("UsageError: --workers is for --runner=local; give Beam's own options in --beam_options "
                       "(e.g. --direct_num_workers=2). Received: --workers=2")
    assert options == ("UsageError: --beam_options needs --runner=beam. "
                       "Received: --beam_options=['--runner=FnApiRunner']")
    assert no_beam.startswith("SystemExit: error: the Beam runner needs Apache Beam, which is not installed: "
                              "pip install 'emotion_e2e[beam]' (the beam extra; ")
