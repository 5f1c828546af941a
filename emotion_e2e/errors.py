"""The two errors the package raises for bad input; the CLIs print them as one line.

Every message names what is needed to find the problem: the file, the
recording and, where it applies, the frame; and what was expected vs. received.
"""

import os
import re


class DataError(ValueError):
    """Input data (media, labels, manifests, records, metadata) that cannot be used as given."""


class ConfigError(ValueError):
    """Flags, configurations or run directories that contradict each other or the data;
    raised before any graph is built."""


def io_reason(e: Exception) -> str:
    """What an OS, h5py or TensorFlow file error says happened, without the path it names:
    ``No space left on device``, ``Not a directory``...

    An errno gives its standard text (h5py's OSError carries errno 28 inside a page of detail);
    a TensorFlow ``OpError`` says ``PATH; REASON``, of which the reason is kept (without the
    ``[Op:NAME]`` an eager op adds).
    """
    if isinstance(e, OSError) and e.errno:
        return os.strerror(e.errno)
    message = (getattr(e, "message", None) or str(e) or type(e).__name__).splitlines()[0]
    return re.sub(r" \[Op:\w+\]$", "", message.rsplit("; ", 1)[-1])
