"""`tfnas.determinism`: traced steps repeat bit for bit (the CLI's end-to-end check, a run
and its killed-and-resumed twin compared as text, is in tests/test_resume.py)."""

import importlib.util
import os

import tensorflow as tf

from tfnas import determinism

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _benchmark():
    spec = importlib.util.spec_from_file_location(
        "determinism_benchmark", os.path.join(ROOT, "benchmarks", "determinism.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configure_switches_only_the_memory_optimizer():
    tf.config.optimizer.set_experimental_options({"min_graph_nodes": -1})
    try:
        determinism.configure(False)
        assert not determinism.is_deterministic()
        determinism.configure(True)
        assert determinism.is_deterministic()
        assert tf.config.optimizer.get_experimental_options()["min_graph_nodes"] == -1
    finally:
        tf.config.optimizer.set_experimental_options({"min_graph_nodes": 0})
        determinism.configure(True)  # as conftest.py leaves it


def test_the_race_graph_gives_one_gradient_in_every_call():
    # By default this graph gave 4 to 13 distinct gradients in 40 calls on a 2-core CPU.
    distinct, _ = _benchmark().race(calls=20)
    assert distinct == 1
