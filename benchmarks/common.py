"""Shared output format of the benchmark scripts: one JSON line per measurement.

Every script prints each measurement as one line of JSON on stdout (human-readable tables
go to stderr), so that runs can be collected with `> results.jsonl` and compared later:

    {"benchmark": "train_throughput", "measurement": "tokens_per_second", "arm": "kmlm-jit",
     "value": 4210.3, "unit": "tokens/s", "baseline": "kerashub-jit", "baseline_value": 3120.8,
     "ratio": 1.349, "higher_is_better": true, "shape": {...}, "machine": {...}}

`ratio` is always value / baseline_value of the same measurement taken in the same run;
`higher_is_better` says which way a ratio is good (tokens/s: up, latency: down).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys

REQUIRED_KEYS = ("benchmark", "measurement", "arm", "value", "unit")


def machine():
    """The CPU model, core count and library versions, for the record."""
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    for module in ("tensorflow", "keras", "keras_hub", "torch", "transformers"):
        loaded = sys.modules.get(module)
        if loaded is not None:
            info[module] = getattr(loaded, "__version__", "?")
    return info


def record(benchmark, measurement, arm, value, unit, *, baseline=None, baseline_value=None,
           higher_is_better=True, **extra):
    """One measurement as a dict in the common format (see the module docstring)."""
    entry = {"benchmark": benchmark, "measurement": measurement, "arm": arm,
             "value": _number(value), "unit": unit, "higher_is_better": bool(higher_is_better)}
    if baseline is not None:
        entry["baseline"] = baseline
        entry["baseline_value"] = _number(baseline_value)
        entry["ratio"] = _number(value / baseline_value) if baseline_value else None
    entry.update(extra)
    return entry


def emit(entry, stream=None, jsonl_path=None):
    """Prints `entry` as one JSON line (stdout by default) and appends it to `jsonl_path`."""
    line = json.dumps(entry, sort_keys=False, allow_nan=False)
    print(line, file=stream or sys.stdout, flush=True)
    if jsonl_path:
        with open(jsonl_path, "a") as file:
            file.write(line + "\n")


def validate(entry):
    """Raises ValueError unless `entry` is a well-formed measurement; returns it."""
    missing = [key for key in REQUIRED_KEYS if key not in entry]
    if missing:
        raise ValueError(f"measurement lacks {', '.join(missing)}: {entry}")
    if not isinstance(entry["value"], (int, float)) or not math.isfinite(entry["value"]):
        raise ValueError(f"value is not a finite number: {entry}")
    if "baseline_value" in entry:
        expected = entry["value"] / entry["baseline_value"]
        if not math.isclose(entry["ratio"], expected, rel_tol=1e-3):
            raise ValueError(f"ratio {entry['ratio']} is not value / baseline_value = {expected}: {entry}")
    return entry


def require_positive(parser, args, names):
    """Exits through `parser.error` unless every option in `names` (attribute names) is >= 1."""
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")


def _number(value):
    # Seven significant digits, not a fixed number of decimals: a tiny baseline (0.000336 s) rounded to
    # six decimals would no longer give back its ratio (value / baseline_value).
    value = float(value)
    return float(f"{value:.7g}") if abs(value) < 1e6 else round(value, 1)
