"""Files of an evaluation: atomic writes, resumable partial results, the results table.

Every file is written to a temporary name and renamed into place, so an interrupted
evaluation leaves either the previous version or the new one, never a truncated file.
Paths may be local or bucket URLs (``tf.io.gfile``). Only process 0 writes; every process
reads.
"""

import csv
import hashlib
import io
import json
import math
import os
import uuid
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import tensorflow as tf

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"


def atomic_write(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename (process 0 only)."""
    if jax.process_index() != 0:
        return
    directory = os.path.dirname(path)
    if directory:
        tf.io.gfile.makedirs(directory)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def exists(path: str) -> bool:
    """Whether ``path`` exists (local or bucket)."""
    return tf.io.gfile.exists(path)


def save_npz(path: str, **arrays: np.ndarray) -> None:
    """Atomically writes ``arrays`` to the ``.npz`` file ``path``."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, buffer.getvalue())


def load_npz(path: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (never unpickles objects)."""
    with tf.io.gfile.GFile(path, "rb") as f:
        raw = f.read()
    with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray | np.generic):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a NaN stderr (one example) becomes null
    return value


def fingerprint(values: Mapping[str, Any]) -> str:
    """A short hash of ``values``: sha256 of their sorted-key JSON, first 12 hex digits.

    Values are numbers, strings, None, lists and mappings (``ConfigDict.to_dict()``).
    """
    text = json.dumps(_jsonable(values), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def save_json(path: str, value: Any) -> None:
    """Atomically writes ``value`` as JSON (numpy values converted, NaN as null)."""
    atomic_write(path, json.dumps(_jsonable(value), indent=1, sort_keys=True).encode())


def load_json(path: str, default: Any = None) -> Any:
    """The JSON value in ``path``, or ``default`` when the file does not exist."""
    if not exists(path):
        return default
    with tf.io.gfile.GFile(path, "r") as f:
        return json.load(f)


def read_results(directory: str) -> list[dict[str, Any]]:
    """The rows of ``directory/results.json``, one per evaluated step, by step."""
    return load_json(os.path.join(directory, RESULTS_JSON), {"rows": []})["rows"]


def write_result(directory: str, row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Adds (or replaces) the row of ``(row['step'], row['fingerprint'])`` in the tables.

    Rows of the same step with another fingerprint (other settings), and rows written before
    fingerprints existed (no ``fingerprint``), are kept. The CSV has one column per metric
    that any row holds, ``step`` first; a metric a row lacks is an empty cell.

    Returns:
      All rows, sorted by step.
    """
    row = _jsonable(dict(row))
    if "step" not in row:
        raise ValueError(f"row must have a 'step', got keys {sorted(row)}.")
    key = (row["step"], row.get("fingerprint"))
    rows = [r for r in read_results(directory) if (r["step"], r.get("fingerprint")) != key]
    rows.append(row)
    rows.sort(key=lambda r: r["step"])
    save_json(os.path.join(directory, RESULTS_JSON), {"rows": rows})
    columns = ["step", *sorted({k for r in rows for k in r} - {"step"})]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    atomic_write(os.path.join(directory, RESULTS_CSV), text.getvalue().encode())
    return rows
