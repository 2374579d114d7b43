"""Bit-identical runs: Grappler's memory optimizer stays out of tfnas's traced steps.

Seeds fix every random draw (`keras.utils.set_random_seed`, `SeedGenerator`s, the
data's stateless ops), but by default TensorFlow's graph optimizer (Grappler) also
runs its memory optimizer on every traced function, and its scheduling pass turns
a large `AddN` (a gradient summed over several consumers of one tensor: the
candidates of a mixed op, a residual branch) into an accumulation in whatever order
the inputs arrive. On a CPU that order changes from call to call when graph ops run
in parallel, and from process to process, so the sum differs in the last bits. The
smallest graph found is four residual branches `relu(h + bn(conv(bn(conv(h)))))`
summed, 64x18x18x96 (`benchmarks/determinism.py`): 4 to 13 distinct gradients in 40
calls of one traced function, and a different one in each new process, in
TensorFlow 2.21, also with oneDNN off, one intra-op thread or
`enable_op_determinism()`; one inter-op thread makes the calls of one process agree,
not two processes. The quickstart's supernet contains that pattern, so two searches
with one seed drifted apart from their first epoch.

`configure(True)` (`"deterministic": true` in a config, the default; `tfnas` calls
it before a run) turns the memory optimizer off for functions traced from then on;
`configure(False)` gives TensorFlow its default back. TensorFlow has no public
switch for it (`tf.config.optimizer.set_experimental_options` leaves it out), so
this sets `RewriterConfig.memory_optimization` on the eager context's config.
"""

from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
from tensorflow.python.eager import context

_MEMORY = {True: rewriter_config_pb2.RewriterConfig.NO_MEM_OPT,
           False: rewriter_config_pb2.RewriterConfig.DEFAULT_MEM_OPT}


def configure(deterministic):
    """Keeps Grappler's memory optimizer out of functions traced from now on when
    `deterministic`; puts TensorFlow's default back otherwise."""
    ctx = context.context()
    config = config_pb2.ConfigProto()
    if ctx._config is not None:  # pylint: disable=protected-access
        config.CopyFrom(ctx._config)  # pylint: disable=protected-access
    config.graph_options.rewrite_options.memory_optimization = _MEMORY[bool(deterministic)]
    ctx._config = config  # pylint: disable=protected-access


def is_deterministic():
    """Whether functions traced now leave the memory optimizer out."""
    config = context.context()._config  # pylint: disable=protected-access
    return (config is not None and config.graph_options.rewrite_options.memory_optimization
            == _MEMORY[True])
