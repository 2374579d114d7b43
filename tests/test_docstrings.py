"""The examples in the docstrings run."""

import doctest
import importlib

import pytest

MODULES = ["tfnas.layers.grouped_conv", "tfnas.layers.channel_shuffle",
           "tfnas.layers.grunas_unit", "tfnas.layers.mixing", "tfnas.layers.mixed_op",
           "tfnas.costs", "tfnas.penalties", "tfnas.budget", "tfnas.budget_graph",
           "tfnas.architecture", "tfnas.builder", "tfnas.spaces.base",
           "tfnas.callbacks", "tfnas.spaces.grunas", "tfnas.search_model",
           "tfnas.layers.binary_gate", "tfnas.spaces.resnet", "tfnas.macs", "tfnas.backup",
           "tfnas.run_dir", "tfnas.data", "tfnas.registry", "tfnas.optimizers",
           "tfnas.deploy.quantize", "tfnas.layers.chosen_path", "tfnas.tuners.controller",
           "tfnas.layers.min_pooling", "tfnas.spaces.shufflenasnet", "tfnas.layers.cell_ops",
           "tfnas.spaces.enas_micro", "tfnas.spaces.darts", "tfnas.spaces.nasbench201",
           "tfnas.compaction.channel_groups", "tfnas.compaction.surgery",
           "tfnas.spaces.cifar_resnet", "tfnas.compaction.target",
           "tfnas.compaction.group_lasso", "tfnas.compaction.training",
           "tfnas.compaction.morphnet", "tfnas.compaction.variational_dropout",
           "tfnas.proxies", "tfnas.tuners.decisions", "tfnas.tuners.evolution",
           "tfnas.tuners.warm_start", "tfnas.methods.candidates", "tfnas.race",
           "tfnas.perturbation"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"keras": importlib.import_module("keras")},
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
