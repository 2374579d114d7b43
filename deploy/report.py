"""Reports of exported models: parameters, MACs, size, latency and accuracy per format."""

import json
import os

from tfnas.macs import count_macs  # noqa: F401  (part of this module's API)


def rows_from_summary(summary, name=None):
    """One row per exported format of a run's `summary.json`."""
    name = name or os.path.basename(summary["run_dir"].rstrip("/"))
    rows = []
    for fmt, info in summary["exports"].items():
        latency = info.get("host_latency") or {}
        rows.append({"model": name, "format": fmt, "parameters": summary.get("parameters"),
                     "macs": summary.get("macs"), "bytes": info.get("bytes"),
                     "median_ms": latency.get("median_ms"), "p90_ms": latency.get("p90_ms"),
                     "accuracy": info.get("test_accuracy", summary.get("test_accuracy"))})
    return rows


def _cell(value, fmt):
    return "—" if value is None else format(value, fmt)


def write_report(rows, directory, title="tfnas report"):
    """Writes `report.json`, `report.md` and, with two or more timed rows, `accuracy_latency.png`."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "report.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=2)
    lines = [f"# {title}", "",
             "| model | format | parameters | MACs | size (KiB) | median latency (ms, 1 thread) "
             "| p90 (ms) | top-1 |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['format']} | {_cell(r['parameters'], ',')} | "
            f"{_cell(r['macs'], ',')} | {_cell(r['bytes'] and r['bytes'] / 1024, '.1f')} | "
            f"{_cell(r['median_ms'], '.3f')} | {_cell(r['p90_ms'], '.3f')} | "
            f"{_cell(r['accuracy'], '.4f')} |")
    timed = [r for r in rows if r["median_ms"] is not None and r["accuracy"] is not None]
    if len(timed) >= 2:
        plot = plot_accuracy_latency(timed, os.path.join(directory, "accuracy_latency.png"))
        lines += ["", f"![accuracy against latency]({os.path.basename(plot)})"]
    with open(os.path.join(directory, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return os.path.join(directory, "report.md")


def plot_accuracy_latency(rows, path):
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, ax = plt.subplots(figsize=(6, 4))
    for model in sorted({r["model"] for r in rows}):
        pts = [r for r in rows if r["model"] == model]
        ax.scatter([r["median_ms"] for r in pts], [r["accuracy"] for r in pts], label=model)
        for r in pts:
            ax.annotate(r["format"].replace("tflite_", ""), (r["median_ms"], r["accuracy"]),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("median latency (ms, 1 thread, host)")
    ax.set_ylabel("top-1 accuracy")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
