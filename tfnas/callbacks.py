"""Callbacks of the search: schedules and the architecture trajectory."""

import csv
import math
import os

import keras
import numpy as np

from tfnas.layers import GumbelSoftmaxMixing

# Per-epoch multipliers of the Gumbel temperature.
TEMPERATURE_RATES = {"code": math.exp(-0.045), "paper": math.exp(-0.645)}


class ArchitectureWarmup(keras.callbacks.Callback):
    """Turns architecture updates off for the first `epochs` epochs (weights only)."""

    def __init__(self, epochs=0):
        super().__init__()
        self.epochs = int(epochs)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.arch_updates_enabled.assign(epoch >= self.epochs)


class TemperatureAnnealing(keras.callbacks.Callback):
    """Sets the Gumbel temperature to `initial * rate ** max(0, epoch - start_epoch)`.

    `rate` is a number or `"code"` (exp(-0.045) per epoch, the GRUNAS reference
    code, the default) or `"paper"` (exp(-0.645), as the paper states). The
    reference keeps T fixed during the weight-only warm-up: pass
    `start_epoch=warmup_epochs`. The value depends only on the epoch, so a
    resumed run continues the schedule.

    Example:

    >>> cb = TemperatureAnnealing(initial=5.0, rate="paper")
    >>> round(cb.value(2), 4)
    1.3764
    """

    def __init__(self, initial=5.0, rate="code", start_epoch=0, minimum=0.0):
        super().__init__()
        self.initial = float(initial)
        if isinstance(rate, str):
            if rate not in TEMPERATURE_RATES:
                raise ValueError(f"Unknown temperature rate {rate!r}; use a number or one of "
                                 f"{sorted(TEMPERATURE_RATES)}.")
            rate = TEMPERATURE_RATES[rate]
        self.rate = float(rate)
        self.start_epoch = int(start_epoch)
        self.minimum = float(minimum)

    def value(self, epoch):
        return max(self.minimum, self.initial * self.rate ** max(0, epoch - self.start_epoch))

    def on_epoch_begin(self, epoch, logs=None):
        rules = [r for r in self.model.mixing_rules if isinstance(r, GumbelSoftmaxMixing)]
        if not rules:
            raise ValueError("TemperatureAnnealing: the model has no Gumbel mixing rule.")
        for rule in rules:
            rule.temperature.assign(self.value(epoch))


class ArchitectureLogger(keras.callbacks.Callback):
    """Records the per-block probabilities every epoch: CSV, TensorBoard and a PNG.

    `log_dir/architecture.csv` gets one row per epoch, block and candidate
    (appended to, so a resumed run continues it); TensorBoard scalars go to
    `log_dir/tensorboard` as `architecture/<block>/<choice>`; the figure
    `log_dir/architecture.png` draws one panel per block.
    """

    def __init__(self, log_dir, plot=True, tensorboard=True):
        super().__init__()
        self.log_dir = log_dir
        self.plot = plot
        self.tensorboard = tensorboard
        self.csv_path = os.path.join(log_dir, "architecture.csv")
        self.png_path = os.path.join(log_dir, "architecture.png")
        self._writer = None

    def on_train_begin(self, logs=None):
        os.makedirs(self.log_dir, exist_ok=True)
        if not os.path.exists(self.csv_path):
            with open(self.csv_path, "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerow(["epoch", "block", "choice", "probability"])
        if self.tensorboard and self._writer is None:
            import tensorflow as tf  # pylint: disable=import-outside-toplevel

            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir,
                                                                      "tensorboard"))

    def on_epoch_end(self, epoch, logs=None):
        rows = []
        for op in self.model.mixed_ops:
            probs = keras.ops.convert_to_numpy(op.probabilities())
            rows += [[epoch + 1, op.name, c, float(p)] for c, p in zip(op.choices, probs)]
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)
        if self._writer is not None:
            import tensorflow as tf  # pylint: disable=import-outside-toplevel

            with self._writer.as_default():
                for e, block, choice, p in rows:
                    tf.summary.scalar(f"architecture/{block}/{choice}", p, step=e)
            self._writer.flush()
        if self.plot:
            plot_trajectories(self.csv_path, self.png_path)


def read_trajectories(csv_path):
    """`{block: {choice: (epochs, probabilities)}}` from an `ArchitectureLogger` CSV."""
    data = {}
    with open(csv_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            series = data.setdefault(row["block"], {}).setdefault(row["choice"], ([], []))
            series[0].append(int(row["epoch"]))
            series[1].append(float(row["probability"]))
    return data


def plot_trajectories(csv_path, png_path, blocks=None):
    """Draws the probability of every candidate over epochs, one panel per block."""
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    data = read_trajectories(csv_path)
    names = [b for b in data if blocks is None or b in blocks]
    if not names:
        return None
    cols = min(5, len(names))
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False,
                             sharey=True)
    for ax, block in zip(axes.ravel(), names):
        for choice, (epochs, probs) in data[block].items():
            ax.plot(epochs, probs, marker="o" if len(epochs) < 15 else None, ms=3,
                    label=str(choice))
        ax.set_title(block, fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_xlabel("epoch", fontsize=8)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    axes[0][0].set_ylabel("probability")
    axes[0][0].legend(fontsize=7, title="choice", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
