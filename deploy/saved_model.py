"""SavedModel export with a named serving signature."""

import keras
import tensorflow as tf

SIGNATURE = "serving_default"


def export_saved_model(model, path, classifier=True):
    """Writes a SavedModel whose `serving_default` signature classifies images.

    Input `images`: float32 `(batch, H, W, C)` with pixel values in [0, 255]
    (the model normalizes inside). Outputs `logits` and `probabilities`
    (softmax), both `(batch, classes)`. The SavedModel loads with plain
    TensorFlow (`tf.saved_model.load(path).signatures["serving_default"]`),
    without tfnas or Keras. With `classifier=False` the signature has one
    output, `outputs` (for models that are not classifiers, such as the single
    ops a latency table times).
    """
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="images")
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images):
        logits = model(images, training=False)
        if not classifier:
            return {"outputs": logits}
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[spec])
    archive.write_out(path, verbose=False)
    return path
