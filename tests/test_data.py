import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfnas import data as data_lib


def test_bundled_set_is_small_real_and_split():
    assert os.path.getsize(data_lib.BUNDLED_PATH) <= 8 * 1024 * 1024
    splits = data_lib.load("bundled")
    assert splits.sizes == {"train": 2000, "val": 350, "full_train": 2350, "test": 350}
    assert splits.num_classes == 10 and splits.image_shape == (32, 32, 3)
    arrays = data_lib.load_bundled_arrays()
    assert arrays["x_train"].dtype == np.uint8
    assert np.bincount(arrays["y_test"]).tolist() == [35] * 10
    # no image is in two splits
    keys = [{a.tobytes() for a in arrays[f"x_{s}"]} for s in ("train", "val", "test")]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])


def test_pipeline_batches_augments_and_resizes():
    splits = data_lib.load("bundled")
    x, y = next(iter(data_lib.pipeline(splits.train, 16, training=True, seed=0)))
    assert x.shape == (16, 32, 32, 3) and x.dtype == tf.float32 and y.dtype == tf.int64
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 255.0
    x, _ = next(iter(data_lib.pipeline(splits.test, 4, image_size=40)))
    assert x.shape == (4, 40, 40, 3)
    plain, _ = next(iter(data_lib.pipeline(splits.test, 4)))
    np.testing.assert_array_equal(plain.numpy(), data_lib.load_bundled_arrays()["x_test"][:4])


class TinyImages(tfds.core.GeneratorBasedBuilder):
    """A real tfds dataset built locally by the test: 40 train and 10 test images."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(8, 8, 3)),
            "label": tfds.features.ClassLabel(num_classes=3)}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(40, 0), "test": self._generate_examples(10, 1)}

    def _generate_examples(self, n, seed):
        rng = np.random.default_rng(seed)
        for i in range(n):
            yield i, {"image": rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
                      "label": int(i % 3)}


def test_tfds_datasets_load_with_search_splits(tmp_path):
    TinyImages(data_dir=str(tmp_path)).download_and_prepare()
    splits = data_lib.load("tiny_images", data_dir=str(tmp_path), val_fraction=0.25,
                           download=False)
    assert splits.sizes == {"train": 30, "val": 10, "full_train": 40, "test": 10}
    assert splits.num_classes == 3 and splits.image_shape == (8, 8, 3)
    assert sum(1 for _ in splits.val) == 10
    x, y = next(iter(data_lib.pipeline(splits.train, 5, training=True, image_size=16)))
    assert x.shape == (5, 16, 16, 3)


def test_unprepared_dataset_offline_names_data_dir_and_bundled_set(tmp_path):
    with pytest.raises(data_lib.DatasetUnavailableError, match="data_dir.*bundled"):
        data_lib.load("cifar10", data_dir=str(tmp_path), download=False)


def test_download_when_offline_fails_fast_with_the_fix(tmp_path, monkeypatch):
    # An address that never answers stands for the download host of an offline machine.
    monkeypatch.setattr(data_lib, "DOWNLOAD_PROBE", ("tfnas-offline.invalid", 443))
    with pytest.raises(data_lib.DatasetUnavailableError,
                       match="cannot be downloaded.*data_dir=DIR.*bundled"):
        data_lib.load("cifar10", data_dir=str(tmp_path), download=True)


def test_unknown_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Unknown dataset 'cifar11'"):
        data_lib.load("cifar11", data_dir=str(tmp_path))


def test_training_batches_are_a_function_of_seed_and_epoch():
    train = data_lib.load("bundled").train.take(96)

    def batches(seed, epoch):
        return [(x.numpy(), y.numpy()) for x, y in
                data_lib.pipeline(train, 32, training=True, seed=seed, epoch=epoch)]

    first = batches(0, 3)
    for (x, y), (x2, y2) in zip(first, batches(0, 3)):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(first[0][0], batches(1, 3)[0][0])  # another seed
    assert not np.array_equal(first[0][0], batches(0, 4)[0][0])  # another epoch
    # Streamed from epoch 2 on (as a resumed fit sees them), epoch 3 has the same batches.
    streamed = [(x.numpy(), y.numpy()) for x, y in data_lib.epochs(
        lambda e: data_lib.pipeline(train, 32, training=True, seed=0, epoch=e), 2, 4)]
    assert len(streamed) == 6
    for (x, y), (x2, y2) in zip(streamed[3:], first):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)


def test_cutout_blanks_one_clipped_square_per_image_like_the_original_code():
    images = np.full((64, 32, 32, 3), 200, np.uint8)
    train = tf.data.Dataset.from_tensor_slices((images, np.zeros(64, np.int64)))
    fill = (1.0, 2.0, 3.0)

    def batch(seed):
        return next(iter(data_lib.pipeline(train, 64, training=True, seed=seed, epoch=0,
                                           cutout=16, cutout_fill=fill)))[0].numpy()

    x = batch(0)
    sides = []
    for image in x:
        blank = np.all(image == fill, axis=-1)
        rows, cols = np.flatnonzero(blank.any(1)), np.flatnonzero(blank.any(0))
        # One axis-aligned square [c - 8, c + 8) clipped at the borders: its sides run
        # from 8 (a center on the border) to 16, and it is filled entirely.
        assert 8 <= len(rows) <= 16 and 8 <= len(cols) <= 16
        assert blank.sum() == len(rows) * len(cols)
        assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)
        if len(rows) < 16:
            assert rows[0] == 0 or rows[-1] == 31
        sides.append((len(rows), len(cols)))
    assert (16, 16) in sides and len(set(sides)) > 1
    np.testing.assert_array_equal(x, batch(0))
    assert not np.array_equal(x, batch(1))
    plain = next(iter(data_lib.pipeline(train, 64, training=True, seed=0, epoch=0)))[0]
    assert not np.any(np.all(plain.numpy() == fill, axis=-1))


def test_cutout_reaches_the_retraining_batches_only_with_augmentation():
    from tfnas import pipeline
    from tfnas.architecture import from_choices
    from tfnas.config import load_config
    from tfnas.errors import ConfigError

    config = load_config(overrides=["data.limit=32", "data.batch_size=32", "train.cutout=16"])
    prepared = pipeline.prepare(config)
    arch = from_choices(prepared.space, {b: 4 for b in prepared.space.blocks()})
    _, _, batches = pipeline._training_model(arch, config["train"], prepared)  # pylint: disable=protected-access
    x = next(iter(batches(0)))[0].numpy()
    fill = np.float32(data_lib.CUTOUT_FILL)
    assert np.all(np.any(np.all(x == fill, axis=-1), axis=(1, 2)))
    searched = next(iter(prepared.batches("train", True, 0)))[0].numpy()
    assert not np.any(np.all(searched == fill, axis=-1))
    with pytest.raises(ConfigError, match="train.cutout augments .* data.augment is false"):
        pipeline.prepare(load_config(overrides=["train.cutout=16", "data.augment=false"]))
