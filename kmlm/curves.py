"""Loss / accuracy curves of a run, drawn from its metrics.csv."""

import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(path):
    """Rows of a Keras CSVLogger file as dicts of floats."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{key: float(value) for key, value in row.items() if value not in ("", None)} for row in csv.DictReader(f)]


def plot_curves(metrics_csv, out_png, steps_per_epoch=1):
    """Draws training (and held-out, when present) loss and masked accuracy against steps."""
    rows = read_metrics(metrics_csv)
    if not rows:
        return None
    steps = [(row["epoch"] + 1) * steps_per_epoch for row in rows]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key, title in ((loss_axis, "loss", "masked LM loss"), (accuracy_axis, "masked_accuracy", "masked accuracy")):
        for prefix, label in (("", "train"), ("val_", "held-out")):
            if all(prefix + key in row for row in rows):
                axis.plot(steps, [row[prefix + key] for row in rows], marker="o", markersize=3, label=label)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(out_png, dpi=100)
    plt.close(figure)
    return out_png
