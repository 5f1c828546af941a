"""What the command-line entry points share: ``run_cli``, their ``app.run``.

Kept free of TensorFlow, so that ``--help`` and flag errors stay fast.
"""

from __future__ import annotations

import atexit
import os
import sys
import traceback

from absl import app


def run_cli(main):
    """``absl.app.run(main)`` for the CLIs that read remote directories (train.py, eval.py).

    Once ``tensorflow_io`` is loaded the process ends through ``os._exit`` (after the ``atexit``
    handlers, the message of ``sys.exit`` or the traceback, and flushing stdout and stderr), which
    skips the C++ static destructors: tensorflow_io's S3 file system initialises the AWS SDK and
    never shuts it down, so at exit the SDK's global EC2-metadata client is destroyed after objects
    it still calls ("pure virtual method called", abort, exit 134), after any process that used
    ``s3://``, whether it failed or finished; and a look-up that ``wait_for_storage`` gave up on may
    still be blocked inside the SDK. Without ``tensorflow_io``, this is ``app.run(main)``."""
    try:
        app.run(main)
    except BaseException as e:
        if "tensorflow_io" not in sys.modules:
            raise
        status = e.code if isinstance(e, SystemExit) else 1
        if not isinstance(e, SystemExit):
            traceback.print_exception(e)
        elif status is None:
            status = 0
        elif not isinstance(status, int):  # sys.exit("error: ..."): the message, and exit status 1
            print(status, file=sys.stderr)
            status = 1
        atexit._run_exitfuncs()  # noqa: SLF001 - what a normal exit runs before the destructors
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
