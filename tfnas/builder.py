"""Builds plain Keras models from architecture documents."""

from tfnas.architecture import Architecture


def build_model(architecture, supernet=None, name=None):
    """A standalone Keras model for `architecture`.

    Args:
        architecture: an `Architecture`, a dict in the document format, or a
            path to a JSON document.
        supernet: optionally, the searched supernet whose weights of the chosen
            candidates (and of the shared stem and head) the model inherits, as
            the GRUNAS reference does before retraining.
        name: the model's name.

    Example:

    >>> arch = {"format": "tfnas.architecture", "version": 1, "space": "grunas",
    ...         "choices": {f"unit_{i}": 1 for i in range(1, 11)}}
    >>> build_model(arch).count_params() > 0
    True
    """
    if isinstance(architecture, dict):
        architecture = Architecture.from_dict(architecture)
    elif isinstance(architecture, str):
        architecture = Architecture.load(architecture)
    architecture.validate()
    space = architecture.search_space()
    model = space.build_model(architecture.choices, name=name)
    if supernet is not None:
        space.inherit_weights(model, supernet, architecture.choices)
    return model
