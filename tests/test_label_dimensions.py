"""Any number of label dimensions, end to end (train → eval → export → predict): one, two and three
dimensions get a best checkpoint chosen by the dev mean CCC, and every file names its columns after
the dimensions, in the run's order."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from emotion_e2e import config as C
from emotion_e2e import evaluation, export, predict, training
from emotion_e2e import run_dir as run_lib
from emotion_e2e.data import convert, sources
from media_fixtures import write_audio
from test_training import train_cfg

DIMENSIONS = ("valence", "arousal", "liking")  # the labels CSV's order, not the sorted one Keras uses
RECORDINGS = {"rec_a": "train", "rec_b": "train", "rec_c": "dev"}
SECONDS, RATE, LABEL_RATE = 2, 16000, 10


@pytest.fixture(scope="module")
def three_dim_corpus(tmp_path_factory):
    """An audio-only manifest corpus of 2 train and 1 dev recordings of 2 s, each labelled with
    smooth, different curves of three dimensions; ``(records folder, {recording: WAV})``."""
    d = tmp_path_factory.mktemp("three_dims")
    rows, wavs = [], {}
    for k, (rid, partition) in enumerate(RECORDINGS.items()):
        t = np.arange(SECONDS * RATE) / RATE
        wavs[rid] = write_audio(d / f"{rid}.wav", 0.4 * np.sin(2 * np.pi * (200 + 100 * k) * t * (1 + t)), RATE)
        s = np.arange(0, SECONDS + 1e-9, 1 / LABEL_RATE)
        curves = [np.sin((j + 1) * s + k) for j in range(len(DIMENSIONS))]
        np.savetxt(d / f"{rid}.csv", np.stack([s, *curves], 1), delimiter=",",
                   header=",".join(["time", *DIMENSIONS]), comments="")
        rows.append(f"{rid},{partition},{rid}.wav,,{rid}.csv")
    manifest = d / "manifest.csv"
    manifest.write_text("recording_id,partition,audio,video,labels\n" + "\n".join(rows) + "\n")
    out = str(d / "records")
    convert.convert(sources.manifest_recordings(str(manifest)), convert.ConvertConfig(modalities=("audio",)), out,
                    source="manifest")
    return out, wavs


@pytest.mark.parametrize("labels", [("arousal",), ("liking", "valence"), DIMENSIONS],
                         ids=["one", "two", "three"])
def test_every_number_of_dimensions_trains_evaluates_exports_and_predicts(three_dim_corpus, labels, tmp_path):
    data_dir, wavs = three_dim_corpus
    run = str(tmp_path / "run")
    cfg = train_cfg(data_dir, ("audio",), inputs=C.InputConfig(modalities=("audio",), label_names=labels))
    training.train(cfg, run, verbose=0)

    # the best checkpoint, and history columns named after the dimensions whatever their number
    assert os.path.exists(run_lib.checkpoint_path(run, "best"))
    history = pd.read_csv(run_lib.history_path(run))
    for split in ("", "val_"):
        for metric in ("ccc", "pcc", "rmse"):
            assert [f"{split}{n}_{metric}" in history for n in labels] == [True] * len(labels)
            assert f"{split}{metric}" not in history
    assert history["val_ccc_mean"][0] == pytest.approx(np.mean([history[f"val_{n}_ccc"][0] for n in labels]))

    # eval.py: the report and predictions CSV have one column per dimension; its CCCs are validation's
    report = evaluation.evaluate_run(run, output_dir=str(tmp_path / "eval"), plots=False)
    ccc = report["scores"]["partition"]["ccc"]
    assert list(ccc) == [*labels, "mean"]
    assert [ccc[n] for n in labels] == pytest.approx([history[f"val_{n}_ccc"][0] for n in labels], abs=1e-4)
    assert evaluation.format_table(report["scores"], labels, "dev").splitlines()[1].split() == [*labels, "mean"]
    table = pd.read_csv(tmp_path / "eval" / "predictions" / "rec_c.csv")
    assert list(table.columns) == ["time"] + [f"{kind}_{n}" for n in labels for kind in ("pred", "gold")]

    # export: one named output per dimension in both signatures and in the description
    version = export.export_run(run, str(tmp_path / "export"))
    with open(os.path.join(version, export.ASSETS_EXTRA, export.DESCRIPTION_FILE)) as f:
        description = json.load(f)
    assert description["label_names"] == list(labels)
    for signature in description["signatures"].values():
        assert [n for n in signature["outputs"] if n not in description["state_names"]] == list(labels)
    saved = tf.saved_model.load(version)
    for name in (export.DEFAULT_SIGNATURE, export.STREAM_SIGNATURE):
        assert set(labels) <= set(saved.signatures[name].structured_outputs), name

    # predict: a CSV column per dimension, the same numbers as eval.py's stateful predictions
    csv = predict.predict_files(version, [wavs["rec_c"]], str(tmp_path / "predict"), progress=False,
                                report=lambda *_: None)[0]
    predicted = pd.read_csv(csv)
    assert list(predicted.columns) == ["time", *labels]
    evaluation.evaluate_run(run, output_dir=str(tmp_path / "stateful"), plots=False, stateful=True)
    whole = pd.read_csv(tmp_path / "stateful" / "predictions" / "rec_c.csv")
    assert len(predicted) == len(whole)
    for n in labels:
        np.testing.assert_allclose(predicted[n], whole[f"pred_{n}"], atol=1e-4, err_msg=n)
