"""Errors raised for bad input data.

Every message names what is needed to find the problem: the file, the
recording and, where it applies, the frame; and what was expected vs. received.
"""


class DataError(ValueError):
    """Input data (media, labels, manifests, records) that cannot be used as given."""
