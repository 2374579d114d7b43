"""Datasets for search and training: tensorflow-datasets, and a bundled offline set.

`load(name)` gives a `Splits` of unbatched `(uint8 image, int label)` datasets:
`train` and `val` for the search (weights and architecture), `full_train`
(train + val) for retraining, `test`. `pipeline` batches, augments (random
crop with 4-pixel zero padding and horizontal flip, as the reference) and
resizes; images stay in [0, 255] because tfnas models normalize inside.
"""

import dataclasses
import os
import socket

import numpy as np
import tensorflow as tf

from tfnas.errors import TfnasError

BUNDLED = "bundled"
BUNDLED_PATH = os.path.join(os.path.dirname(__file__), "cifar10_mini.npz")
BUNDLED_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]


# Checked before a download: tfds retries unreachable hosts for minutes.
# The CIFAR-10 training mean in pixels (DARTS's normalization mean x 255).
CUTOUT_FILL = (125.31, 122.96, 113.86)
DOWNLOAD_PROBE = ("storage.googleapis.com", 443)


class DatasetUnavailableError(TfnasError, RuntimeError):
    """A dataset cannot be loaded (for example: offline and not prepared)."""


@dataclasses.dataclass
class Splits:
    train: tf.data.Dataset
    val: tf.data.Dataset
    full_train: tf.data.Dataset
    test: tf.data.Dataset
    num_classes: int
    image_shape: tuple
    sizes: dict


def load_bundled_arrays():
    """`{"x_train", "y_train", "x_val", "y_val", "x_test", "y_test"}` of the bundled set.

    2,700 real CIFAR-10 training images (270 per class) split 200 / 35 / 35
    per class into train / val / test.
    """
    with np.load(BUNDLED_PATH) as data:
        return {k: data[k] for k in data.files}


def _from_arrays(x, y):
    return tf.data.Dataset.from_tensor_slices((x, y.astype("int64")))


def load(name=BUNDLED, data_dir=None, val_fraction=0.2, download=True):
    """Loads `name` (`"bundled"` or any tfds image classification set) as `Splits`.

    Args:
        name: `"bundled"`, `"cifar10"`, `"cifar100"` or another tfds name with
            `image` and `label` features and a `train` split (and `test`, or
            else 10 % of train is held out).
        data_dir: where tfds keeps prepared data (default tfds's own).
        val_fraction: share of the training split used for architecture
            updates during the search (the reference: 0.2). Ignored for the
            bundled set, which comes split.
        download: allow tfds to download and prepare the data.
    """
    if name == BUNDLED:
        a = load_bundled_arrays()
        full_x = np.concatenate([a["x_train"], a["x_val"]])
        full_y = np.concatenate([a["y_train"], a["y_val"]])
        return Splits(_from_arrays(a["x_train"], a["y_train"]),
                      _from_arrays(a["x_val"], a["y_val"]), _from_arrays(full_x, full_y),
                      _from_arrays(a["x_test"], a["y_test"]), len(BUNDLED_CLASSES),
                      tuple(a["x_train"].shape[1:]),
                      {"train": len(a["y_train"]), "val": len(a["y_val"]),
                       "full_train": len(full_y), "test": len(a["y_test"])})
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    builder = _tfds_builder(name, data_dir, download)
    info = builder.info
    features = info.features
    if "image" not in features or "label" not in features:
        raise ValueError(f"tfds dataset {name!r} has features {list(features)}; tfnas needs "
                         "'image' and 'label' (image classification).")
    pct = int(round(100 * (1 - val_fraction)))
    has_test = "test" in info.splits
    train_split = "train" if has_test else "train[:90%]"
    search_train = f"train[:{pct}%]" if has_test else f"train[:{int(pct * 0.9)}%]"
    search_val = f"train[{pct}%:]" if has_test else f"train[{int(pct * 0.9)}%:90%]"
    test_split = "test" if has_test else "train[90%:]"
    splits = [search_train, search_val, train_split, test_split]
    datasets = [builder.as_dataset(split=s, as_supervised=True) for s in splits]
    sizes = {k: int(info.splits[s].num_examples)
             for k, s in zip(["train", "val", "full_train", "test"], splits)}
    return Splits(*datasets, num_classes=features["label"].num_classes,
                  image_shape=tuple(features["image"].shape), sizes=sizes)


def _tfds_builder(name, data_dir, download):
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as err:
        raise ValueError(f"Unknown dataset {name!r}: tensorflow-datasets does not know it "
                         f"({str(err).splitlines()[0]}). Use 'bundled' or a tfds name such as "
                         "'cifar10'.") from None
    if _is_prepared(builder):
        return builder
    where = data_dir or "tfds's default data directory"
    if not download:
        raise DatasetUnavailableError(
            f"Dataset {name!r} is not prepared in {where} and download=False. Prepare it "
            f"where there is internet (tfds build {name} --data_dir=DIR), pass that "
            "data_dir, or use the bundled offline set (dataset 'bundled').")
    offline_hint = (f"If this machine is offline, prepare the dataset elsewhere (tfds build "
                    f"{name} --data_dir=DIR), copy DIR here and pass data_dir=DIR (--set "
                    "data.data_dir=DIR), or use the bundled offline set "
                    "(--set data.dataset=bundled).")
    try:
        socket.create_connection(DOWNLOAD_PROBE, timeout=5).close()
    except OSError as err:
        raise DatasetUnavailableError(
            f"Dataset {name!r} is not prepared in {where} and cannot be downloaded: "
            f"{DOWNLOAD_PROBE[0]} is unreachable ({err}). {offline_hint}") from None
    try:
        builder.download_and_prepare()
    except Exception as err:  # pylint: disable=broad-except
        raise DatasetUnavailableError(
            f"Could not download dataset {name!r} with tensorflow-datasets into {where}: "
            f"{type(err).__name__}: {str(err)[:300]}. {offline_hint}") from None
    return builder


def as_written(function):
    """`function` for tf.data to trace without AutoGraph: the conversion recurses into
    every Python function called (1.2 to 1.4 s of a small search's 8 to 9 s), and
    tfnas's dataset functions branch on Python values only."""
    return tf.autograph.experimental.do_not_convert(function)


def _is_prepared(builder):
    return tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json"))


def _seed_pair(seed, epoch):
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])


def pipeline(dataset, batch_size, training=False, augment=True, image_size=None, seed=0,
             epoch=None, shuffle_buffer=10_000, drop_remainder=False, cutout=0,
             cutout_fill=CUTOUT_FILL):
    """Batches `(image, label)` into float32 images in [0, 255] and int64 labels.

    In training: shuffle, and (with `augment`) random crop with 4-pixel zero
    padding and horizontal flip, then, with `cutout > 0`, Cutout (DeVries and
    Taylor, 2017; the DARTS evaluation recipe): the square of side `cutout`
    around a uniformly drawn pixel, clipped at the borders, is set to
    `cutout_fill`. DARTS zeroes the normalized image, that is, fills with the
    dataset mean, which `CUTOUT_FILL` is for CIFAR-10. `image_size` resizes
    (bilinear) after that.

    Each image's crop and flip are stateless random ops seeded from `(seed,
    epoch, position)`, so parallel `map` threads cannot change them. Without
    `epoch`, the dataset reshuffles at every iteration (every epoch of `fit`),
    seeded by `seed` and TensorFlow's global seed. With `epoch` (an int, or a
    tensor inside `epochs`), it gives the batches of that epoch, a function of
    `(seed, epoch)` alone: what `epochs` streams, and what a resumed run sees.

    Example:

    >>> ds = tf.data.Dataset.from_tensor_slices((tf.zeros((6, 8, 8, 3), tf.uint8),
    ...                                          tf.range(6, dtype=tf.int64)))
    >>> a = [y.numpy().tolist() for _, y in pipeline(ds, 3, training=True, seed=1, epoch=2)]
    >>> a == [y.numpy().tolist() for _, y in pipeline(ds, 3, training=True, seed=1, epoch=2)]
    True
    """
    seed = 0 if seed is None else seed
    if training and epoch is not None and not isinstance(epoch, tf.Tensor):
        # Built inside a traced function, as every epoch of `epochs` is, so that the
        # shuffle is seeded the same way here and there.
        batches = (tf.data.Dataset.from_tensors(tf.constant(epoch, tf.int64))
                   .flat_map(as_written(lambda e: pipeline(
                       dataset, batch_size, training, augment, image_size, seed, e,
                       shuffle_buffer, drop_remainder, cutout, cutout_fill))))
        n = int(dataset.cardinality())
        if n >= 0:  # flat_map hides the number of batches; Keras's progress bar wants it
            batches = batches.apply(tf.data.experimental.assert_cardinality(
                n // batch_size if drop_remainder else -(-n // batch_size)))
        return batches.prefetch(tf.data.AUTOTUNE)
    base = _seed_pair(seed, 0 if epoch is None else epoch)

    def prepare(position, example):
        image, label = example
        image = tf.cast(image, tf.float32)
        if training and augment:
            element = tf.random.experimental.stateless_fold_in(base, position)
            padded = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
            image = tf.image.stateless_random_crop(
                padded, tf.shape(image),
                seed=tf.random.experimental.stateless_fold_in(element, 0))
            image = tf.image.stateless_random_flip_left_right(
                image, seed=tf.random.experimental.stateless_fold_in(element, 1))
            if cutout:
                image = _cutout(image, cutout, cutout_fill,
                                tf.random.experimental.stateless_fold_in(element, 2))
        if image_size is not None:
            image = tf.image.resize(image, (image_size, image_size))
        return image, label

    if training and epoch is None:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    elif training:
        # Inside the traced function, the graph's seed is dropped: TF would pair the
        # shuffle's seed with the process's global seed (and, with a global seed of 0,
        # take a tensor's truth value). The shuffle is then seeded by (seed, epoch) alone.
        tf.compat.v1.get_default_graph().seed = None
        shuffle_seed = tf.cast(tf.random.experimental.stateless_fold_in(base, 7)[0], tf.int64)
        dataset = dataset.shuffle(shuffle_buffer, seed=shuffle_seed,
                                  reshuffle_each_iteration=True)
    dataset = dataset.enumerate().map(as_written(prepare), num_parallel_calls=tf.data.AUTOTUNE,
                                      deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    in_epochs = isinstance(epoch, tf.Tensor)  # `epochs` prefetches the whole stream
    return dataset if in_epochs else dataset.prefetch(tf.data.AUTOTUNE)


def _cutout(image, length, fill, seed):
    """The original Cutout code's square: rows and columns [c - length // 2,
    c + length // 2) around a uniformly drawn center c, clipped to the image."""
    shape = tf.shape(image)
    center = [tf.random.stateless_uniform(
        [], tf.random.experimental.stateless_fold_in(seed, axis), 0, shape[axis],
        dtype=tf.int32) for axis in (0, 1)]
    rows, cols = tf.range(shape[0])[:, None], tf.range(shape[1])[None, :]
    inside = ((rows >= center[0] - length // 2) & (rows < center[0] + length // 2)
              & (cols >= center[1] - length // 2) & (cols < center[1] + length // 2))
    return tf.where(inside[:, :, None], tf.constant(fill, image.dtype), image)


def epochs(make_epoch, first, last):
    """The batches of epochs `first .. last - 1` in one stream: `make_epoch(epoch)` each.

    With `fit(..., steps_per_epoch=n, initial_epoch=first)` every epoch gets the
    batches of its own number, also when a run resumes in the middle.
    """
    return (tf.data.Dataset.range(first, last).flat_map(as_written(make_epoch))
            .prefetch(tf.data.AUTOTUNE))


def search_schedule(train, arch, alternation="step", arch_every=1):
    """Tags batches with the update they drive: `(x, y, 0)` weights, `(x, y, 1)` architecture
    (the phase repeated for every example of the batch).

    `"step"`: after every `arch_every` batches of `train`, one architecture
    batch from `arch` (repeated as needed); 1 is DARTS and NNI's ProxylessNAS,
    5 the official ProxylessNAS code. `"epoch"`: all of `train`, then all of
    `arch`.
    """
    def tag(phase):
        # One phase per example, so that tf.distribute can split the batch across replicas.
        return as_written(
            lambda x, y: (x, y, tf.fill(tf.shape(y)[:1], tf.constant(phase, tf.int32))))

    if not isinstance(arch_every, int) or arch_every < 1:
        raise ValueError(f"arch_every must be a positive integer, got {arch_every!r}.")
    weights = train.map(tag(0))
    archs = arch.map(tag(1))
    # Inside `epochs` (a traced function) the sizes are unknown: no assertion then.
    n_train = tf.get_static_value(train.cardinality())
    n_train = -1 if n_train is None else int(n_train)
    if alternation == "step":
        pattern = tf.data.Dataset.from_tensor_slices(
            tf.constant([0] * arch_every + [1], tf.int64)).repeat()
        # Stops at the first weight batch that is not there: the schedule ends with train.
        schedule = tf.data.Dataset.choose_from_datasets([weights, archs.repeat()], pattern,
                                                        stop_on_empty_dataset=True)
        total = n_train + n_train // arch_every if n_train > 0 else -1
    elif alternation == "epoch":
        schedule = weights.concatenate(archs)
        n_arch = tf.get_static_value(arch.cardinality())
        n_arch = -1 if n_arch is None else int(n_arch)
        total = n_train + n_arch if n_train > 0 and n_arch > 0 else -1
    else:
        raise ValueError(f"alternation must be 'step' or 'epoch', got {alternation!r}.")
    if total > 0:
        schedule = schedule.apply(tf.data.experimental.assert_cardinality(total))
    return schedule
