"""The two errors the package raises for bad input; the CLIs print them as one line.

Every message names what is needed to find the problem: the file, the
recording and, where it applies, the frame; and what was expected vs. received.
"""


class DataError(ValueError):
    """Input data (media, labels, manifests, records, metadata) that cannot be used as given."""


class ConfigError(ValueError):
    """Flags, configurations or run directories that contradict each other or the data;
    raised before any graph is built."""
