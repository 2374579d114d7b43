import json

import keras
import numpy as np
import pytest

from conftest import TINY_SPACE
from tfnas.architecture import Architecture, ArchitectureError, count_parameters
from tfnas.builder import build_model
from tfnas.layers import SoftmaxMixing
from tfnas.spaces import get_space

PAPER = [4, 1, 1, 2, 2, 3, 2, 4, 4, 6]


def _doc(**changes):
    doc = {"format": "tfnas.architecture", "version": 1, "space": "grunas",
           "space_config": {}, "choices": {f"unit_{i}": g for i, g in enumerate(PAPER, 1)}}
    doc.update(changes)
    return doc


def test_document_round_trips_and_builds_the_paper_network(tmp_path):
    arch = Architecture.from_dict(_doc())
    path = tmp_path / "arch.json"
    arch.save(str(path))
    loaded = Architecture.load(str(path))
    assert loaded.choice_list() == PAPER
    assert count_parameters(build_model(str(path))) == 162_430
    with pytest.raises(FileExistsError):
        arch.save(str(path))


@pytest.mark.parametrize("doc,message", [
    (_doc(choices={f"unit_{i}": 1 for i in range(1, 10)}), "has 10 blocks.*gives 9"),
    (_doc(space="grunas2"), "Unknown search space 'grunas2'"),
    (_doc(choices={**_doc()["choices"], "unit_3": 5}), "choice 5 is not a candidate"),
    (_doc(space_config={"candidates": [1, 2, 5]}), "channel shuffle needs a group count"),
    (_doc(version=7), "Unsupported architecture document version 7"),
    (_doc(format="something"), "Not a tfnas architecture document"),
    (_doc(extra=1), r"Unknown keys \['extra'\]"),
    ({"format": "tfnas.architecture", "version": 1, "space": "grunas"}, "has no 'choices'"),
])
def test_invalid_documents_are_rejected_with_the_reason(doc, message):
    with pytest.raises(ArchitectureError, match=message):
        Architecture.from_dict(doc)


def test_malformed_json_is_rejected(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"format": "tfnas.architecture", ')
    with pytest.raises(ArchitectureError, match="not valid JSON"):
        Architecture.load(str(path))
    with pytest.raises(ArchitectureError, match="Cannot read"):
        Architecture.load(str(tmp_path / "missing.json"))


def test_derived_model_inherits_the_chosen_candidates_and_computes_the_same_function():
    space = get_space("grunas", TINY_SPACE)
    supernet = space.build_supernet(SoftmaxMixing())
    choices = {"unit_1": 4, "unit_2": 1, "unit_3": 2, "unit_4": 4}
    # Train the supernet's BN statistics a little so inheritance is not trivially zero.
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    for op_name, choice in choices.items():
        op = supernet.get_layer(op_name)
        logits = np.full(len(op.choices), -1e4, "float32")
        logits[op.choices.index(choice)] = 0.0
        op.logits.assign(logits)
    supernet(x, training=True)
    arch = Architecture("grunas", space.config, choices)
    model = build_model(arch, supernet=supernet)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)),
                               keras.ops.convert_to_numpy(supernet(x)[0]), rtol=1e-4,
                               atol=1e-4)
    fresh = build_model(arch)
    assert not np.allclose(keras.ops.convert_to_numpy(fresh(x)),
                           keras.ops.convert_to_numpy(model(x)))


def test_derived_model_saves_as_keras_and_reloads(tmp_path):
    model = build_model(_doc())
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(x)),
                               keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-5)
    # Built-in layers, except the two tfnas layers a grouped shuffle network needs.
    custom = {type(l).__name__ for l in model.layers if not type(l).__module__.startswith("keras")}
    assert custom == {"GroupedConv2D", "ChannelShuffle"}


def test_derive_writes_probabilities_and_parameters():
    space = get_space("grunas", TINY_SPACE)
    supernet = space.build_supernet()
    supernet.get_layer("unit_2").logits.assign([0.0, 0.0, 3.0])
    from tfnas.architecture import derive

    arch = derive(supernet, space, metadata={"note": "test"})
    assert arch.choices["unit_2"] == 4
    assert arch.probabilities["unit_2"][2] > 0.9
    assert arch.parameters == count_parameters(space.build_model(arch.choices))
    doc = json.loads(arch.to_json())
    assert doc["format"] == "tfnas.architecture" and doc["version"] == 1
    assert Architecture.from_dict(doc).choices == arch.choices
