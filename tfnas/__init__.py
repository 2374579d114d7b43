"""tfnas: neural architecture search for edge devices with Keras 3."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
