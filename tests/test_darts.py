"""The DARTS space: the paper's networks parameter for parameter, its derivation rule and
genotypes, the search network sharing one architecture per cell kind."""

import os

import numpy as np
import pytest

from conftest import assert_trains_and_exports
from tfnas import SearchModel
from tfnas.architecture import Architecture
from tfnas.costs import COSTS, count_parameters
from tfnas.layers.cell_ops import DARTS_OPS
from tfnas.spaces import SearchSpaceError, get_space
from tfnas.spaces.darts import DARTS_V2, DartsSpace, choices_genotype, genotype_choices


def test_darts_v2_evaluation_network_has_the_original_codes_parameter_count():
    # DARTS's cnn/model.py NetworkCIFAR(C=36, layers=20, genotype=DARTS_V2), counted by its
    # train.py (utils.count_parameters_in_MB leaves the auxiliary head out): 3.349342 MB,
    # the paper's "3.3 M".
    model = get_space("darts", {"filters": 36, "cells": 20}).build_model(
        genotype_choices(DARTS_V2))
    assert count_parameters(model) == 3_349_342
    shipped = Architecture.load(os.path.join(os.path.dirname(__file__), "..", "configs",
                                             "architectures", "darts_v2.json"))
    assert shipped.choices == genotype_choices(DARTS_V2)
    assert shipped.parameters == 3_349_342
    # Searched at one size, built and costed at the evaluation size.
    space = get_space("darts", {"filters": 4, "cells": 3,
                                "evaluation": {"filters": 8, "cells": 5}})
    evaluation = get_space("darts", {"filters": 8, "cells": 5})
    assert COSTS.get("parameters", space=space).of_choices(genotype_choices(DARTS_V2)) == \
        count_parameters(evaluation.build_model(genotype_choices(DARTS_V2)))
    cells = {layer.name.split("_")[0] for layer in space.build_supernet().layers
             if layer.name.startswith("cell")}
    assert cells == {f"cell{k}" for k in range(3)}
    with pytest.raises(SearchSpaceError, match="evaluation is null or"):
        get_space("darts", {"evaluation": {"filters": 36}})


def test_genotypes_convert_both_ways_and_bad_genotypes_say_what_is_wrong():
    choices = genotype_choices(DARTS_V2)
    assert sum(op != "none" for op in choices.values()) == 16
    back = choices_genotype(choices)
    for kind in ("normal", "reduce"):
        for i in range(4):
            assert sorted(back[kind][2 * i:2 * i + 2], key=str) == \
                sorted(DARTS_V2[kind][2 * i:2 * i + 2], key=str)
        assert back[f"{kind}_concat"] == [2, 3, 4, 5]
    bad = {**DARTS_V2, "normal": [("sep_conv_7x7", 0)] + DARTS_V2["normal"][1:]}
    with pytest.raises(SearchSpaceError, match="Unknown op 'sep_conv_7x7'"):
        genotype_choices(bad)
    with pytest.raises(SearchSpaceError, match=r"two .* pairs .*\(8\); got 7"):
        genotype_choices({**DARTS_V2, "reduce": DARTS_V2["reduce"][:7]})
    with pytest.raises(SearchSpaceError, match="Node 0 .* takes input 2"):
        genotype_choices({**DARTS_V2, "normal": [("sep_conv_3x3", 2)] + DARTS_V2["normal"][1:]})


@pytest.mark.parametrize("genotype, message", [
    ({"normal": DARTS_V2["normal"]}, "has no 'reduce' cell"),
    ({**DARTS_V2, "normal": [("sep_conv_3x3",)] * 8}, "each pair \\[op, input\\]"),
    ({**DARTS_V2, "normal": [("sep_conv_3x3", True)] * 8}, "takes input True"),
    ({**DARTS_V2, "normal": "sep_conv_3x3"}, "The normal cell of the DARTS genotype is"),
    ("DARTS_V2", "has no 'normal' and 'reduce' cell"),
    ({**DARTS_V2, "normal": [(3, 0)] * 8}, "Unknown op 3"),
])
def test_malformed_genotypes_are_one_line_errors(genotype, message):
    with pytest.raises(SearchSpaceError, match=message):
        genotype_choices(genotype)


def test_a_darts_document_whose_node_takes_three_inputs_is_refused():
    from tfnas.architecture import ArchitectureError  # pylint: disable=import-outside-toplevel

    choices = genotype_choices(DARTS_V2)
    choices["normal_n2_in2"] = "skip_connect"  # node 2 already takes inputs 0 and 1
    with pytest.raises(ArchitectureError, match="Node 2 of the normal cell takes 3 inputs"):
        Architecture("darts", {}, choices).validate()


def test_tuner_draws_of_darts_are_valid_cells():
    import keras_tuner as kt  # pylint: disable=import-outside-toplevel

    space = DartsSpace(filters=4, cells=3)
    for seed in range(5):
        hp = kt.HyperParameters()
        rng = np.random.default_rng(seed)
        space.hyperparameters(hp)
        for h in hp.space:
            hp.values[h.name] = h.values[rng.integers(len(h.values))]
        space.validate_architecture(space.hyperparameters(hp))


def test_derivation_keeps_the_two_strongest_edges_of_a_node_leaving_none_out():
    space = get_space("darts", {"nodes": 2})
    uniform = [1 / 8] * 8
    probabilities = {b: uniform for b in space.blocks()}
    # Node 1 of the normal cell: "none" dominates input 0, which still has the strongest
    # other op; input 2 (node 0) is next; input 1 has the weakest best op.
    probabilities["normal_n1_in0"] = [0.72, 0, 0, 0, 0.2, 0.08, 0, 0]
    probabilities["normal_n1_in1"] = [0.1, 0.13, 0.11, 0.11, 0.11, 0.11, 0.11, 0.12]
    probabilities["normal_n1_in2"] = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.85, 0.15]
    choices = space.derive(probabilities)
    assert (choices["normal_n1_in0"], choices["normal_n1_in1"], choices["normal_n1_in2"]) == \
        ("sep_conv_3x3", "none", "dil_conv_3x3")
    for kind in ("normal", "reduce"):
        for i in range(2):
            kept = [choices[f"{kind}_n{i}_in{j}"] for j in range(i + 2)]
            assert sum(op != "none" for op in kept) == 2


def test_search_network_shares_alpha_per_cell_kind_and_takes_a_search_step():
    import tensorflow as tf

    from tfnas.data import search_schedule

    space = get_space("darts", {"filters": 4, "cells": 3, "nodes": 2, "input_shape": [8, 8, 3]})
    supernet = space.build_supernet("softmax")
    search = SearchModel(supernet)
    assert len(search.mixed_ops) == 3 * 5 and len(search.architecture_variables) == 10
    assert [op.name for op in search.logit_ops] == \
        sorted(space.blocks(), key=lambda b: (b.startswith("reduce"), b))
    search.compile(optimizer="sgd", arch_optimizer="adam")
    rng = np.random.default_rng(0)
    split = tf.data.Dataset.from_tensor_slices(
        (rng.uniform(0, 255, (8, 8, 8, 3)).astype("float32"), rng.integers(0, 10, 8))).batch(4)
    search.fit(search_schedule(split, split), epochs=1, verbose=0)
    logits = [np.asarray(v) for v in search.architecture_variables]
    assert all(np.ptp(v) > 0 for v in logits)  # the alpha step moved every edge
    arch = search.derive_architecture(space)
    assert set(arch.choices.values()) <= set(DARTS_OPS)


def _search_steps(rematerialize, savers=None):
    """Two alpha and two weight steps of a small DARTS search in float64; returns the
    variables after them and what the CPU allocator's peak over the second pair (the first
    pair traces) added to the memory held before it."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    space = get_space("darts", {"filters": 8, "cells": 3, "nodes": 1,
                                 "input_shape": [32, 32, 3], **(savers or {})})
    search = SearchModel(space.build_supernet("softmax"), rematerialize=rematerialize)
    search.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                   arch_optimizer=keras.optimizers.Adam(0.01))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (32, 32, 32, 3)), tf.float64)
    y = tf.constant(rng.integers(0, 10, 32), tf.int32)
    search.make_train_function()
    for repeat in range(2):
        if repeat:
            tf.config.experimental.reset_memory_stats("CPU:0")
            held = tf.config.experimental.get_memory_info("CPU:0")["current"]
        for phase in (1, 0):
            search.train_function(iter([(x, y, tf.constant(phase))]))
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] - held
    return [(v.path, np.asarray(v, "float64")) for v in search.variables], peak


def _plain_and_rematerialized(savers, out):
    """Both searches of `_search_steps` in float64, written to `out` (npz)."""
    import keras

    # In float64 the two differ only by rounding (4e-16 seen); in float32 the different
    # order of the gradient sums shows after two steps (2e-5 in the stem).
    keras.config.set_floatx("float64")
    plain, plain_peak = _search_steps(False, savers)
    remat, remat_peak = _search_steps(True, savers)
    np.savez(out, peaks=[plain_peak, remat_peak], names=[n for n, _ in plain],
             **{f"plain{i}": a for i, (_, a) in enumerate(plain)},
             **{f"remat{i}": a for i, (_, a) in enumerate(remat)})


SAVERS = {"darts": None, "dca_shared_ops": {"share_source_ops": True, "bottleneck": 2}}


@pytest.fixture(scope="module")
def rematerialized_steps(tmp_path_factory):
    """Both `SAVERS` searches, plain and rematerialized (`_plain_and_rematerialized`), in
    one process of their own with TensorFlow's BFC allocator on the CPU: the default CPU
    allocator keeps no statistics (get_memory_info fails) unless something earlier in the
    process switched them on, so the peaks are measured where nothing else ran."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("remat")
    script = (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
              "import conftest, test_darts\n"
              "for name, savers in test_darts.SAVERS.items():\n"
              f"    test_darts._plain_and_rematerialized(savers, {str(out)!r} + f'/{{name}}.npz')")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": "true",
                                 "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize("name", SAVERS)
def test_rematerialized_search_steps_like_the_plain_one_in_less_memory(name,
                                                                       rematerialized_steps):
    out = rematerialized_steps / f"{name}.npz"
    saved = np.load(out)
    variables, (plain_peak, remat_peak) = list(saved["names"]), saved["peaks"]
    for i, variable in enumerate(variables):
        # Batch-norm statistics too: the recomputation must not update them a second time.
        np.testing.assert_allclose(saved[f"remat{i}"], saved[f"plain{i}"], rtol=0, atol=1e-10,
                                   err_msg=variable)
    assert sum("moving_mean" in variable for variable in variables) > 0
    if SAVERS[name] is None:  # shared ops keep few activations to spare
        assert remat_peak < 0.6 * plain_peak, (remat_peak, plain_peak)


def test_derived_network_trains_and_exports_with_builtin_ops(tmp_path):
    space = get_space("darts", {"filters": 4, "cells": 3, "input_shape": [16, 16, 3]})
    choices = genotype_choices({
        "normal": DARTS_V2["normal"],
        # Every op at stride 2 on the cell inputs, and a node left with both inputs.
        "reduce": [("dil_conv_5x5", 0), ("sep_conv_5x5", 1), ("skip_connect", 1),
                   ("avg_pool_3x3", 0), ("dil_conv_3x3", 1), ("max_pool_3x3", 0),
                   ("skip_connect", 0), ("sep_conv_3x3", 1)]})
    model = space.build_model(choices)
    assert_trains_and_exports(model, tmp_path, {"DEPTHWISE_CONV_2D", "CONV_2D", "MAX_POOL_2D",
                                                "AVERAGE_POOL_2D", "CONCATENATION"})
    assert count_parameters(model) > 0


def test_dca_savers_share_ops_per_source_bottleneck_them_and_derive_the_other_cells():
    import tensorflow as tf

    from conftest import counting_search_model
    from tfnas.data import search_schedule
    from tfnas.layers.mixing import ArgmaxMixing

    config = {"filters": 4, "cells": 3, "nodes": 2, "input_shape": [8, 8, 3]}
    plain = get_space("darts", config).build_supernet("softmax")
    space = get_space("darts", {**config, "bottleneck": 2, "share_source_ops": True,
                                "derived_cells": True})
    supernet = space.build_supernet("softmax")
    names = {layer.name for layer in supernet.layers}
    # cell0 carries the normal cell's alpha: one op of each kind per source node (3 sources
    # feed 5 edges), computed at 4 / 2 = 2 channels between 1x1 reductions and expansions.
    shared = {n for n in names if n.startswith("cell0_in") and n.endswith("_sep_conv_3x3")}
    assert shared == {f"cell0_in{j}_sep_conv_3x3" for j in range(3)}
    assert supernet.get_layer("cell0_in0_sep_conv_3x3").channels == 2
    assert {"cell0_reduce0", "cell0_expand1"} <= {n.rsplit("_", 1)[0] for n in names}
    assert count_parameters(supernet) < count_parameters(plain)
    Counting = counting_search_model()
    search = Counting(supernet)
    assert len(search.architecture_variables) == 10  # still one alpha per edge and kind
    copies = [op for op in search.mixed_ops if not op.owns_logits]
    assert copies and all(isinstance(op.mixing, ArgmaxMixing) for op in copies)
    search.compile(optimizer="sgd", arch_optimizer="adam")
    rng = np.random.default_rng(0)
    split = tf.data.Dataset.from_tensor_slices(
        (rng.uniform(0, 255, (8, 8, 8, 3)).astype("float32"), rng.integers(0, 10, 8))).batch(4)
    copy = copies[0]
    before = [[np.asarray(v) for v in c.trainable_variables] for c in copy.candidates]
    search.fit(search_schedule(split, split), epochs=1, verbose=0)
    assert Counting.traces == 2  # once per phase
    ran = int(copy.mixing_state["executed"].numpy())
    assert ran == int(np.argmax(np.asarray(copy.logits)[1:])) + 1  # the best op but none
    for j, (candidate, old) in enumerate(zip(copy.candidates, before)):
        changed = any(not np.array_equal(np.asarray(v), o)
                      for v, o in zip(candidate.trainable_variables, old))
        if j != ran:  # only the argmax op of a derived cell runs and learns
            assert not changed
    assert all(np.ptp(np.asarray(v)) > 0 for v in search.architecture_variables)
    # A derived cell's node sums the edges DARTS's rule derives now.
    derived = space.derive(search.probabilities())
    node = supernet.get_layer("cell2_n1_strongest")
    picked = np.asarray(node([np.full((1, 1), 10.0 ** k) for k in range(3)]))[0, 0]
    kept = [j for j in range(3) if derived[f"reduce_n1_in{j}"] != "none"]
    assert picked == sum(10.0 ** j for j in kept)
    with pytest.raises(SearchSpaceError, match="bottleneck=3 must divide filters=4"):
        get_space("darts", {**config, "bottleneck": 3})
    with pytest.raises(SearchSpaceError, match="derived_cells is true or false"):
        get_space("darts", {**config, "derived_cells": 1})


def test_evaluation_network_trains_with_drop_path_and_the_auxiliary_head(tmp_path):
    import keras

    from tfnas import pipeline
    from tfnas.architecture import from_choices
    from tfnas.config import load_config
    from tfnas.errors import ConfigError
    from tfnas.layers.cell_ops import DropPath
    from tfnas.run_dir import RunDirectory

    # The original code's NetworkCIFAR(36, 10, 20, auxiliary=True, DARTS_V2): its head adds
    # 476,426 parameters (1x1 conv 576 -> 128, BN, 2x2 conv 128 -> 768, BN, linear 768 -> 10).
    paper = get_space("darts", {"filters": 36, "cells": 20})
    model, auxiliary = paper.training_model(genotype_choices(DARTS_V2), drop_path=0.2,
                                            auxiliary_weight=0.4)
    assert count_parameters(model) == 3_349_342
    assert count_parameters(keras.Model(model.inputs, [model.outputs[0], auxiliary])) == \
        3_825_768
    # Drop-path after every op but the identity: 6 of the normal cell's 8 ops, 5 of the
    # reduction cell's (its skip_connects from node 2 run at stride 1).
    drops = [layer for layer in model.layers if isinstance(layer, DropPath)]
    assert len(drops) == 18 * 6 + 2 * 5
    config = load_config(overrides=[
        'space={"name": "darts", "config": {"filters": 4, "cells": 3}}',
        "data.limit=64", "data.batch_size=32", "train.epochs=2", "train.inherit=false",
        "train.drop_path=0.2", "train.auxiliary_weight=0.4"])
    prepared = pipeline.prepare(config)
    arch = from_choices(prepared.space, genotype_choices(DARTS_V2))
    run = RunDirectory(str(tmp_path / "train"))
    model, summary = pipeline.train(config, run, arch, verbose=0, prepared=prepared)
    with open(run.file("logs", "train_history.csv"), encoding="utf-8") as f:
        header = f.readline()
    assert "loss" in header and header.count("loss") >= 3  # total, main and auxiliary
    rates = {float(layer.rate.numpy()) for layer in model.layers if isinstance(layer, DropPath)}
    assert len(rates) == 1 and rates.pop() == pytest.approx(0.1)  # 0.2 * epoch 1 of 2
    assert 0 <= summary["test_accuracy"] <= 1
    loaded = keras.saving.load_model(summary["keras_model"])
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-5, atol=1e-5)
    small = get_space("darts", {"filters": 4, "cells": 3, "input_shape": [16, 16, 3]})
    dropped, _ = small.training_model(genotype_choices(DARTS_V2), drop_path=0.2)
    # Identity at inference; the cells' ops go through QAT in the test above.
    assert_trains_and_exports(dropped, tmp_path, {"CONCATENATION"}, qat=False)
    with pytest.raises(ConfigError, match="train.drop_path and train.auxiliary_weight need"):
        pipeline.prepare(load_config(overrides=["train.drop_path=0.1"]))
