"""Training on several devices or machines with TensorFlow's own engine, `tf.distribute`.

The config's `distribute` section picks the strategy; `strategy(settings)`
makes it and the pipeline runs every stage inside its scope, so the models,
optimizers and schedule variables a method creates are mirrored, and Keras's
`fit` splits each global batch (`data.batch_size`) across the replicas and sums
their gradients. Two things Keras does not do by itself, done here:

- batch normalization computes its statistics over the global batch
  (`synchronize_batch_norms`), so that N replicas train the network one
  device would, not N networks of smaller batches;
- a loss made of a Keras loss and terms of its own (a cost penalty) is
  divided by the replicas as a whole (`scale_loss`), since Keras divides only
  its own losses.

Example:

>>> import keras
>>> with strategy({"strategy": None}).scope():
...     layer = keras.layers.BatchNormalization()
>>> replicas()
1
"""

import contextlib
import json
import os

import keras
import tensorflow as tf

from tfnas.errors import ConfigError, TfnasError

STRATEGIES = (None, "mirrored", "multi_worker")


def replicas():
    """The number of replicas of the current strategy (1 outside any)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def scale_loss(value):
    """`value` (a loss over this replica's examples) divided by the replicas, so that the
    gradients tf.distribute sums are those of the global batch."""
    n = replicas()
    return value if n == 1 else value * (1.0 / n)


def unscale_loss(value):
    """A Keras loss's value on this replica, undivided by the replicas."""
    n = replicas()
    return value if n == 1 else value * float(n)


def synchronize_batch_norms(model):
    """Makes the batch normalizations of `model` compute their statistics over the global
    batch when training on several replicas (Keras's `synchronized=True`); a no-op on
    one. Returns `model`.

    Those inside the candidates of mixed ops that run one candidate per step (ENAS's
    chosen path, binary gates) keep per-replica statistics: the candidate runs in a
    graph conditional, and the all-reduce of a synchronized batch norm cannot sit in
    one (`merge_call` inside control flow)."""
    if replicas() > 1:
        inside = {id(layer) for layer in _one_path_layers(model)}
        for layer in model._flatten_layers(include_self=False):  # pylint: disable=protected-access
            if isinstance(layer, keras.layers.BatchNormalization) and id(layer) not in inside:
                layer.synchronized = True
    return model


def _one_path_layers(model):
    """The layers inside candidates of `model`'s mixed ops that run one candidate per step."""
    from tfnas.layers.mixed_op import mixed_ops  # pylint: disable=import-outside-toplevel

    for op in mixed_ops(model):
        if op.mixing.partial_execution:
            for candidate in op.candidates:
                yield from candidate._flatten_layers(include_self=True)  # pylint: disable=protected-access


class DistributionError(TfnasError, ValueError):
    """What a run asks cannot run under its tf.distribute strategy."""


def check_replicable(model):
    """Refuses, on several replicas, mixed ops that run their one candidate per step as a
    function call (`"reproducible": true`): TensorFlow places that call's captured
    variables on one device. The default lowered switch runs in every replica."""
    if replicas() == 1:
        return
    from tfnas.layers.mixed_op import mixed_ops  # pylint: disable=import-outside-toplevel

    rules = sorted({type(op.mixing).__name__ for op in mixed_ops(model)
                    if op.mixing.partial_execution and getattr(op.mixing, "reproducible", False)})
    if rules:
        raise DistributionError(
            f"The supernet's mixed ops ({', '.join(rules)}) run their candidate as a function "
            "call (\"reproducible\": true), which does not run across replicas under "
            "tf.distribute; set \"reproducible\": false (the default), or search on one device.")


class PortInUseError(DistributionError):
    """This process's address in TF_CONFIG is held by another process."""


def is_chief():
    """Whether this process writes the run's files: always, except on the workers of a
    multi-worker cluster other than the chief (task 0 of "chief", or worker 0 without
    one)."""
    cluster = _tf_config()
    if not cluster:
        return True
    task = cluster.get("task", {})
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and \
        "chief" not in cluster.get("cluster", {})


def task_index():
    """This process's task index in TF_CONFIG (0 outside a cluster)."""
    cluster = _tf_config() or {}
    return int(cluster.get("task", {}).get("index", 0))


def _tf_config():
    text = os.environ.get("TF_CONFIG")
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({err}); it describes the cluster "
                          'as {"cluster": {"worker": ["host:port", ...]}, "task": '
                          '{"type": "worker", "index": 0}}.') from None


_STRATEGIES = {}


def strategy(settings):
    """The `tf.distribute.Strategy` of a config's `distribute` section, made once per
    process (a multi-worker strategy must be made before TensorFlow runs anything)."""
    key = json.dumps(settings, sort_keys=True)
    if key not in _STRATEGIES:
        _STRATEGIES[key] = _make(settings)
    return _STRATEGIES[key]


def _make(settings):
    name = settings.get("strategy")
    if settings.get("logical_cpus"):
        _split_cpu(settings["logical_cpus"])
    if name is None:
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = settings.get("devices")
        if not devices and settings.get("logical_cpus"):
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        if settings.get("devices"):
            _check_devices(settings["devices"])
        return tf.distribute.MirroredStrategy(devices) if devices else \
            tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        cluster = _tf_config()
        if not cluster or "cluster" not in cluster or "task" not in cluster:
            raise ConfigError("distribute.strategy 'multi_worker' needs TF_CONFIG in the "
                              "environment, naming the cluster and this process's task "
                              '({"cluster": {"worker": ["host:port", ...]}, "task": '
                              '{"type": "worker", "index": 0}}).')
        address = _check_task(cluster)
        try:
            return _MultiWorkerStrategy()
        except tf.errors.UnknownError as err:
            if "Could not start gRPC server" not in str(err):
                raise
            raise PortInUseError(
                f"TF_CONFIG gives this process the address {address}, and its port is in use "
                "by another process: stop that process (an earlier run of this worker?) or "
                "give this task a free port in TF_CONFIG.") from None
    raise ConfigError(f"distribute.strategy: {name!r} is not one of {list(STRATEGIES)}.")


def _check_devices(devices):
    """Each of `devices` exists on this machine: a missing GPU must not quietly leave the
    run on the CPU."""
    have = {}
    for device in tf.config.list_logical_devices():
        spec = tf.DeviceSpec.from_string(device.name)
        have.setdefault(spec.device_type, set()).add(spec.device_index)
    for name in devices:
        try:
            spec = tf.DeviceSpec.from_string(name)
        except ValueError:
            spec = None
        if spec is None or spec.device_type is None:
            raise ConfigError(f"distribute.devices: {name!r} is not a device name; name "
                              "devices as \"/gpu:0\" or \"/cpu:0\".")
        if (spec.device_index or 0) not in have.get(spec.device_type.upper(), set()):
            present = ", ".join(f"/{kind.lower()}:{i}" for kind, indices in sorted(have.items())
                                for i in sorted(indices)) or "none"
            raise ConfigError(f"distribute.devices: {name} is not a device of this machine "
                              f"(it has {present}); name devices it has, or leave "
                              "distribute.devices out to use all its GPUs.")


def _check_task(cluster):
    """This process's task exists in the cluster of TF_CONFIG; returns its address."""
    task, jobs = cluster["task"], cluster["cluster"]
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in jobs:
        raise ConfigError(f"TF_CONFIG: task type {kind!r} is not a job of the cluster "
                          f"{sorted(jobs)}; set task.type to one of them.")
    if isinstance(index, bool) or not isinstance(index, int) or \
            not 0 <= index < len(jobs[kind]):
        raise ConfigError(f"TF_CONFIG: task.index {index!r} is not a {kind} of the cluster, "
                          f"which has {len(jobs[kind])} (indices 0 to {len(jobs[kind]) - 1}); "
                          "give each process its own index.")
    return jobs[kind][index]


class _MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`MultiWorkerMirroredStrategy` whose `reduce` takes a nest of values and scalars
    along `axis=0`, as `MirroredStrategy`'s does: Keras 3's `fit` reduces a whole data
    batch, and its scalar logs along axis 0, with it (keras-team/keras#20585)."""

    def reduce(self, reduce_op, value, axis):
        def one(v):
            if isinstance(v, keras.Variable):
                return v  # a variable (a schedule's value): the same on every worker
            local = self.experimental_local_results(v)[0]
            scalar = getattr(local, "shape", None) is not None and local.shape.rank == 0
            return super(_MultiWorkerStrategy, self).reduce(
                reduce_op, v, None if scalar else axis)
        return tf.nest.map_structure(one, value)


def _split_cpu(count):
    """Splits the CPU into `count` logical devices (before TensorFlow starts its runtime)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:  # the runtime runs already: fine if it has them
        have = len(tf.config.list_logical_devices("CPU"))
        if have != count:
            raise ConfigError(
                f"distribute.logical_cpus is {count}, but TensorFlow started with {have} CPU "
                "devices in this process; set it before anything runs TensorFlow (the tfnas "
                "command line does), or leave it out.") from None


@contextlib.contextmanager
def scope(settings):
    """Runs the block inside the configured strategy's scope."""
    with strategy(settings).scope():
        yield
