"""Keeps native libraries' log lines out of the output, and gives them back on failure.

TensorFlow, the TFLite converter and LiteRT print from C++ straight to the
process's stdout and stderr (TF 2.21's absl logging ignores
`TF_CPP_MIN_LOG_LEVEL` for the lines it prints at import). `native_output()`
sends file descriptors 1 and 2 to a temporary file for the duration of a
block: when the block raises, what the libraries printed is written to stderr
first, so no error is hidden. The command line turns this on (`enable()`);
`--tf_logs` leaves it off. Library users see everything, as before.
"""

import contextlib
import os
import sys
import tempfile

_ENABLED = False


def enable(on=True):
    global _ENABLED  # pylint: disable=global-statement
    _ENABLED = bool(on)


@contextlib.contextmanager
def native_output():
    """Hides what native code prints to fds 1 and 2 inside the block, unless it fails."""
    if not _ENABLED:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", "replace"))
            sys.stderr.flush()
            raise
        else:
            _restore(saved)


def _restore(saved):
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    for fd in saved:
        os.close(fd)
    saved.clear()
