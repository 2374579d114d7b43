import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

# A GRUNAS space small enough to search in seconds on a CPU.
TINY_SPACE = {"widths": [[12, 24], [24, 24], [24, 48], [48, 48]], "candidates": [1, 2, 4]}


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()
