"""Runs ``training.train`` in a process of its own, for the tests that kill it or run it as one
worker of a cluster (the cluster comes from ``TF_CONFIG``).

  python tests/train_driver.py CONFIG_JSON RUN_DIR [--weights_out=F.npz] [--kill=WHERE:N]

``--kill`` ends the process with SIGKILL, as a lost machine would:
  after_backup:N   right after the backup of global step N is committed
  in_save:N        in the middle of the N-th model checkpoint write (best.keras or last.keras),
                   after its temporary file is half written
  in_backup:N      in the middle of the N-th backup weights write
"""

import argparse
import json
import os
import signal

import numpy as np


def kill():
    os.kill(os.getpid(), signal.SIGKILL)


def install_kill(where: str, n: int):
    import keras  # noqa: PLC0415

    from emotion_e2e import checkpointing  # noqa: PLC0415

    calls = {"count": 0}

    def half_written(path):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a file")
        kill()

    if where == "after_backup":
        save = checkpointing.Backup._save  # noqa: SLF001

        def save_then_die(self, epoch, step):
            save(self, epoch, step)
            if self.step == n:
                kill()

        checkpointing.Backup._save = save_then_die  # noqa: SLF001
    elif where in ("in_save", "in_backup"):
        method = "save" if where == "in_save" else "save_weights"
        original = getattr(keras.Model, method)

        def dying(self, filepath, *args, **kwargs):
            calls["count"] += 1
            if calls["count"] == n:
                half_written(filepath)
            return original(self, filepath, *args, **kwargs)

        setattr(keras.Model, method, dying)
    else:
        raise SystemExit(f"unknown --kill place {where!r}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("run_dir")
    parser.add_argument("--weights_out")
    parser.add_argument("--kill")
    args = parser.parse_args()
    from emotion_e2e import config, training  # noqa: PLC0415

    with open(args.config) as f:
        cfg = config.from_dict(config.TrainConfig, json.load(f))
    if args.kill:
        where, n = args.kill.split(":")
        install_kill(where, int(n))
    history = training.train(cfg, args.run_dir, verbose=0)
    if args.weights_out:
        import keras  # noqa: PLC0415

        model = history.model
        np.savez(args.weights_out, *[keras.ops.convert_to_numpy(w) for w in model.weights],
                 iterations=keras.ops.convert_to_numpy(model.optimizer.iterations))


if __name__ == "__main__":
    main()
