"""Loss / accuracy curves of a run, drawn from its metrics.csv."""

import csv

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(path):
    """Rows of a Keras CSVLogger file as dicts of floats; "NA" and empty cells are left out
    (CSVLogger writes NA for a metric an epoch did not report, e.g. after a resume)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            values = {}
            for key, value in row.items():
                try:
                    values[key] = float(value)
                except (TypeError, ValueError):
                    continue
            rows.append(values)
    return rows


def plot_curves(metrics_csv, out_png, steps_per_epoch=1):
    """Draws training (and held-out, when present) loss and masked accuracy against steps."""
    rows = read_metrics(metrics_csv)
    if not rows:
        return None
    steps = [(row["epoch"] + 1) * steps_per_epoch for row in rows]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, key, title in ((loss_axis, "loss", "masked LM loss"), (accuracy_axis, "masked_accuracy", "masked accuracy")):
        for prefix, label in (("", "train"), ("val_", "held-out")):
            points = [(step, row[prefix + key]) for step, row in zip(steps, rows) if prefix + key in row]
            if points:
                axis.plot(*zip(*points), marker="o", markersize=3, label=label)
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend()
    figure.tight_layout()
    figure.savefig(out_png, dpi=100)
    plt.close(figure)
    return out_png
