"""Callbacks of the search: schedules and the architecture trajectory."""

import csv
import os
import time

import keras
import numpy as np

from tfnas.layers.mixed_op import distributions


class ArchitectureWarmup(keras.callbacks.Callback):
    """Turns architecture updates off for the first `epochs` epochs (weights only)."""

    def __init__(self, epochs=0):
        super().__init__()
        self.epochs = int(epochs)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.arch_updates_enabled.assign(epoch >= self.epochs)


class ArchitectureLogger(keras.callbacks.Callback):
    """Records the per-block probabilities every epoch: CSV, TensorBoard and PNGs.

    `log_dir/architecture.csv` gets one row per epoch, block and candidate
    (appended to, so a resumed run continues it); TensorBoard scalars go to
    `log_dir/tensorboard` as `architecture/<block>/<choice>`; the figure
    `log_dir/architecture.png` (drawn at the end, and during the search at most
    every `plot_every` seconds: one drawing takes about 0.5 s, longer than an
    epoch of a small search) draws one panel per block (softmax of the
    logits per candidate over epochs, as Fig. 3 of *Search Space Adaptation for
    Differentiable NAS*), and
    `architecture_blocks.png` only the `plot_blocks` when they are given. At
    the end of training `architecture_final.png` shows the final distribution
    of every block with the chosen candidate marked.
    """

    def __init__(self, log_dir, plot=True, tensorboard=True, plot_blocks=None, plot_every=60.0):
        super().__init__()
        self.log_dir = log_dir
        self.plot = plot
        self.plot_every = plot_every
        self._drawn_at = time.monotonic()
        self.tensorboard = tensorboard
        self.plot_blocks = list(plot_blocks) if plot_blocks else None
        self.csv_path = os.path.join(log_dir, "architecture.csv")
        self.png_path = os.path.join(log_dir, "architecture.png")
        self.blocks_png_path = os.path.join(log_dir, "architecture_blocks.png")
        self.final_png_path = os.path.join(log_dir, "architecture_final.png")
        self._writer = None

    def on_train_begin(self, logs=None):
        if self.plot_blocks:
            names = [op.name for op in self.model.mixed_ops]
            unknown = [b for b in self.plot_blocks if b not in names]
            if unknown:
                raise ValueError(f"ArchitectureLogger: plot_blocks {unknown} are not blocks of "
                                 f"the supernet; its blocks are {names}.")
        os.makedirs(self.log_dir, exist_ok=True)
        self._drawn_at = time.monotonic()
        if not os.path.exists(self.csv_path):
            with open(self.csv_path, "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerow(["epoch", "block", "choice", "probability"])
        if self.tensorboard and self._writer is None:
            import tensorflow as tf  # pylint: disable=import-outside-toplevel

            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir,
                                                                      "tensorboard"))

    def on_epoch_end(self, epoch, logs=None):
        rows = [[epoch + 1, block, c, float(p)]
                for block, (labels, probs) in distributions(self.model.mixed_ops).items()
                for c, p in zip(labels, probs)]
        with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)
        if self._writer is not None:
            import tensorflow as tf  # pylint: disable=import-outside-toplevel

            with self._writer.as_default():
                for e, block, choice, p in rows:
                    tf.summary.scalar(f"architecture/{block}/{choice}", p, step=e)
            self._writer.flush()
        if self.plot and time.monotonic() - self._drawn_at >= self.plot_every:
            self._draw_trajectories()

    def _draw_trajectories(self):
        plot_trajectories(self.csv_path, self.png_path)
        if self.plot_blocks:
            plot_trajectories(self.csv_path, self.blocks_png_path, blocks=self.plot_blocks)
        self._drawn_at = time.monotonic()

    def on_train_end(self, logs=None):
        if self.plot:
            self._draw_trajectories()
            plot_final_choices(distributions(self.model.mixed_ops), self.final_png_path)


def normalized_entropy(probabilities):
    """Entropy of a distribution divided by log(n): 0 for one-hot, 1 for uniform."""
    p = np.clip(np.asarray(probabilities, np.float64), 1e-12, 1.0)
    return float(-(p * np.log(p)).sum() / np.log(len(p)))


class ConvergenceStop(keras.callbacks.Callback):
    """Ends the search once the architecture has settled.

    Stops after the epoch at which the derived architecture (argmax of every
    block) has not changed for `patience` epochs and the mean normalized
    entropy of the block distributions (0 one-hot, 1 uniform) is below
    `entropy_threshold`. Seed 001 finds that alpha turns erratic again when a
    search runs too long; this is the exit it asks for. The epoch (1-based) is
    in `stopped_epoch` and the architecture of that epoch in `choices`; the
    logs get `arch_entropy` and `arch_stable_epochs` every epoch.

    Example:

    >>> stop = ConvergenceStop(patience=3, entropy_threshold=0.4)
    >>> stop.converged([0, 1, 1, 1, 1][-4:], 0.2)
    True
    """

    def __init__(self, patience=5, entropy_threshold=0.5):
        super().__init__()
        if int(patience) < 1:
            raise ValueError(f"ConvergenceStop: patience must be at least 1, got {patience}.")
        if not 0 < float(entropy_threshold) <= 1:
            raise ValueError("ConvergenceStop: entropy_threshold is a normalized entropy in "
                             f"(0, 1], got {entropy_threshold}.")
        self.patience = int(patience)
        self.entropy_threshold = float(entropy_threshold)
        self.history = []
        self.stopped_epoch = None
        self.choices = None

    def converged(self, recent, entropy):
        """`recent`: the last `patience + 1` architectures; `entropy`: the current mean."""
        return (len(recent) > self.patience and all(a == recent[-1] for a in recent)
                and entropy < self.entropy_threshold)

    def get_state(self):
        """What a resumed search needs to keep counting stable epochs (`TrainingBackup`)."""
        return {"history": self.history, "stopped_epoch": self.stopped_epoch,
                "choices": self.choices}

    def set_state(self, state):
        self.history = list(state["history"])
        self.stopped_epoch, self.choices = state["stopped_epoch"], state["choices"]
        self._restored = True

    def on_train_begin(self, logs=None):
        if not getattr(self, "_restored", False):
            self.history, self.stopped_epoch, self.choices = [], None, None
        self._restored = False

    def on_epoch_end(self, epoch, logs=None):
        choices, entropies = {}, []
        for block, (labels, p) in distributions(self.model.mixed_ops).items():
            choices[block] = labels[int(np.argmax(p))]
            entropies.append(normalized_entropy(p))
        entropy = float(np.mean(entropies))
        self.history.append(choices)
        recent = self.history[-(self.patience + 1):]
        stable = next((i for i, a in enumerate(reversed(self.history)) if a != choices),
                      len(self.history)) - 1
        if logs is not None:
            logs["arch_entropy"] = entropy
            logs["arch_stable_epochs"] = stable
        if self.converged(recent, entropy):
            self.stopped_epoch, self.choices = epoch + 1, choices
            self.model.stop_training = True


def plot_final_choices(distributions, png_path):
    """Heat map of the final probabilities, one row per block, the chosen candidate boxed.

    `distributions` maps each block to `(choice labels, probabilities)`.
    """
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    blocks = list(distributions)
    labels = [str(c) for c in distributions[blocks[0]][0]]
    table = np.array([np.asarray(distributions[b][1], np.float64) for b in blocks])
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(labels), 0.8 + 0.32 * len(blocks)))
    ax.imshow(table, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i, row in enumerate(table):
        best = int(np.argmax(row))
        for j, p in enumerate(row):
            ax.text(j, i, f"{p:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if p > 0.6 else "black",
                    fontweight="bold" if j == best else "normal")
        ax.add_patch(plt.Rectangle((best - 0.5, i - 0.5), 1, 1, fill=False, lw=1.5,
                                   color="crimson"))
    ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=8)
    ax.set_yticks(range(len(blocks)), blocks, fontsize=8)
    ax.set_title("final architecture distribution (chosen boxed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


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
    names = [b for b in (data if blocks is None else blocks) if b in data]
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
