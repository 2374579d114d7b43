"""The architecture document: the one source of truth for a derived network.

A versioned JSON document names the search space and its configuration, the
choice made at every block and, when it was derived from a search, the final
probabilities. `tfnas.build_model` turns any valid document into a Keras model.

    {
      "format": "tfnas.architecture",
      "version": 1,
      "space": "grunas",
      "space_config": {...},
      "choices": {"unit_1": 4, ...},
      "probabilities": {"unit_1": [0.1, ...], ...},
      "parameters": 162430,
      "metadata": {...}
    }
"""

import json
import os

from tfnas.costs import count_parameters  # noqa: F401  (the one counter; re-exported)
from tfnas.errors import TfnasError
from tfnas.spaces import SearchSpaceError, get_space
from tfnas.spaces.base import check_parameters

FORMAT = "tfnas.architecture"
VERSION = 1
_KEYS = {"format", "version", "space", "space_config", "choices", "probabilities",
         "parameters", "metadata"}


class ArchitectureError(TfnasError, ValueError):
    """An architecture document is malformed or does not fit its search space."""


class Architecture:
    """One architecture of a search space.

    Example:

    >>> arch = Architecture("grunas", {}, {f"unit_{i}": 1 for i in range(1, 11)})
    >>> arch.validate().choice_list()
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    """

    def __init__(self, space, space_config, choices, probabilities=None, parameters=None,
                 metadata=None):
        self.space = space
        self.space_config = dict(space_config or {})
        self.choices = dict(choices)
        self.probabilities = probabilities
        self.parameters = parameters
        self.metadata = dict(metadata or {})

    def search_space(self):
        try:
            return get_space(self.space, self.space_config)
        except SearchSpaceError as err:
            raise ArchitectureError(f"Invalid architecture: {err}") from None

    def validate(self):
        """Checks the choices against the search space; returns `self`."""
        space = self.search_space()
        try:
            space.validate_choices(self.choices)
            # A space's rules for whole architectures (DARTS: two inputs per node).
            getattr(space, "validate_architecture", lambda choices: None)(self.choices)
        except SearchSpaceError as err:
            raise ArchitectureError(f"Invalid architecture: {err}") from None
        if self.probabilities is not None:
            for block, probs in self.probabilities.items():
                if block not in self.choices or len(probs) != len(space.candidates(block)):
                    raise ArchitectureError(
                        f"Invalid architecture: probabilities of {block!r} do not match the "
                        f"candidates {space.candidates(block)}.")
        return self

    def choice_list(self):
        return [self.choices[b] for b in self.search_space().blocks()]

    def to_dict(self):
        return {"format": FORMAT, "version": VERSION, "space": self.space,
                "space_config": self.space_config, "choices": self.choices,
                "probabilities": self.probabilities, "parameters": self.parameters,
                "metadata": self.metadata}

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path, overwrite=False):
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json() + "\n")

    @classmethod
    def from_dict(cls, doc):
        if not isinstance(doc, dict):
            raise ArchitectureError("An architecture document must be a JSON object.")
        if doc.get("format") != FORMAT:
            raise ArchitectureError(f"Not a tfnas architecture document: 'format' must be "
                                    f"{FORMAT!r}, got {doc.get('format')!r}.")
        if doc.get("version") != VERSION:
            raise ArchitectureError(f"Unsupported architecture document version "
                                    f"{doc.get('version')!r}; this tfnas reads version "
                                    f"{VERSION}.")
        unknown = sorted(set(doc) - _KEYS)
        if unknown:
            raise ArchitectureError(f"Unknown keys {unknown} in the architecture document; "
                                    f"valid keys are {sorted(_KEYS)}.")
        for key in ("space", "choices"):
            if key not in doc:
                raise ArchitectureError(f"The architecture document has no {key!r}.")
        if not isinstance(doc["space"], str):
            raise ArchitectureError(f"'space' must be a space name, got {doc['space']!r}.")
        if not isinstance(doc["choices"], dict):
            raise ArchitectureError("'choices' must map block names to choices.")
        if not isinstance(doc.get("space_config") or {}, dict):
            raise ArchitectureError("'space_config' must be an object (the space's "
                                    f"configuration), got {doc['space_config']!r}.")
        probabilities = doc.get("probabilities")
        if probabilities is not None and not (
                isinstance(probabilities, dict) and all(
                    isinstance(p, list) and all(isinstance(x, (int, float))
                                                and not isinstance(x, bool) for x in p)
                    for p in probabilities.values())):
            raise ArchitectureError("'probabilities' must map block names to lists of numbers "
                                    "(or be null).")
        if not isinstance(doc.get("metadata") or {}, dict):
            raise ArchitectureError("'metadata' must be an object.")
        return cls(doc["space"], doc.get("space_config"), doc["choices"],
                   doc.get("probabilities"), doc.get("parameters"),
                   doc.get("metadata")).validate()

    @classmethod
    def from_json(cls, text):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise ArchitectureError(f"The architecture document is not valid JSON: {err}.") \
                from None
        except RecursionError:
            raise ArchitectureError("The architecture document nests its values too deeply "
                                    "to be one.") from None
        return cls.from_dict(doc)

    @classmethod
    def load(cls, path):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as err:
            raise ArchitectureError(f"Cannot read architecture document {path}: {err}.") \
                from None
        except UnicodeDecodeError:
            raise ArchitectureError(f"{path} is not an architecture document (a JSON text "
                                    "file); it looks binary.") from None
        try:
            arch = cls.from_json(text)
            # A document may ask for sizes no machine has: counted before anything is built.
            check_parameters(arch.search_space(), arch.choices, "This architecture")
            return arch
        except (ArchitectureError, SearchSpaceError) as err:
            raise ArchitectureError(f"{path}: {err}") from None

    def __repr__(self):
        return f"Architecture(space={self.space!r}, choices={self.choice_list()})"


def derive(supernet, space, metadata=None, cost=None, limits=None, scores=None):
    """The architecture `space.derive` makes of the probabilities of `supernet`'s blocks
    (within `limits` of `cost`, if given), or of other `scores` of the blocks' candidates
    (perturbation-based selection); the document records the probabilities."""
    from tfnas.layers.mixed_op import distributions  # pylint: disable=import-outside-toplevel

    probabilities = {b: [round(float(p), 6) for p in probs]
                     for b, (_, probs) in distributions(supernet).items()}
    choices = space.derive(probabilities if scores is None else scores, cost=cost,
                           limits=limits)
    return from_choices(space, choices, probabilities, metadata)


def from_choices(space, choices, probabilities=None, metadata=None):
    """The document of one architecture of `space`, with its parameter count."""
    arch = Architecture(space.name, space.config, choices, probabilities,
                        metadata=metadata).validate()
    arch.parameters = count_parameters(space.build_model(arch.choices))
    return arch
