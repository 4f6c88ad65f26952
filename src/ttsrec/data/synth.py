"""Synthetic data in the exact Criteo TSV format, labelled by a hidden nonlinear teacher.

Why this teacher: first-order effects alone would let one model learn everything, and ensembles would
have nothing to add. Low-rank crosses between categorical fields, numeric-by-categorical
interactions and a saturating nonlinearity give the members something to disagree about, while Zipf
vocabularies leave a long tail that min-count folds into OOV (irreducible noise, like real logs).
Everything derives from the seed, generated chunk by chunk (fixed chunk size) so memory stays flat.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ttsrec.data.spec import preset_dict
from ttsrec.errors import UserError
from ttsrec.utils.atomic import atomic_write_text

NUM_INT, NUM_CAT = 13, 26
CHUNK_ROWS = 1 << 17
CALIBRATION = 1 << 40  # chunk index of the bias-calibration sample (never a data chunk)
TARGET_CTR = 0.25
# Vocabulary per categorical field (Criteo mixes tiny and huge fields) and its Zipf exponent.
CAT_VOCAB = (
    1_500,
    550,
    300_000,
    120_000,
    300,
    24,
    12_000,
    630,
    3,
    60_000,
    5_000,
    250_000,
    3_200,
    27,
    9_000,
    200_000,
    10,
    4_500,
    2_000,
    4,
    280_000,
    16,
    15,
    80_000,
    95,
    50_000,
)
ZIPF_A, ZIPF_Q = 1.2, 200  # Zipf-Mandelbrot p(k) ~ 1 / (k + q)^a
LATENT = 4
TAG_VOCAB, TAG_MEAN, TAG_WEIGHT = 400, 3.0, 2.0
"""`--tags`: Zipf tags per row (Poisson count), each with its own effect; the teacher adds the mean of
the row's tag effects, so pooling the tags is learnable and their joined combination mostly is not."""
TAG_SEPARATOR = "|"
CROSSES = ((0, 2), (1, 6), (3, 10), (4, 12), (5, 14), (7, 20), (9, 23), (13, 15), (2, 11), (17, 24))


@dataclass
class _Teacher:
    cdfs: list[np.ndarray]
    hexes: list[pl.Series]
    cat_missing: np.ndarray
    first: list[np.ndarray]
    left: list[np.ndarray]
    right: list[np.ndarray]
    int_mu: np.ndarray
    int_sigma: np.ndarray
    int_missing: np.ndarray
    int_weight: np.ndarray
    int_freq: np.ndarray
    gate: np.ndarray
    bias: float = 0.0


def _hex_vocab(size: int, salt: int) -> pl.Series:
    """Distinct 8-hex-digit tokens (rank * odd constant + salt is a bijection mod 2^32)."""
    values = (np.arange(size, dtype=np.uint64) * np.uint64(2654435761) + np.uint64(salt)) & np.uint64(
        0xFFFFFFFF
    )
    nibbles = (values[:, None] >> np.arange(28, -1, -4, dtype=np.uint64)) & np.uint64(0xF)
    chars = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles.astype(np.intp)]
    return pl.Series(np.ascontiguousarray(chars).view("S8").ravel()).cast(pl.String)


def _teacher(seed: int, max_vocab: int | None = None) -> _Teacher:
    rng = np.random.default_rng([seed, 0])
    vocab = [size if max_vocab is None else min(size, max_vocab) for size in CAT_VOCAB]
    cdfs, hexes, first = [], [], []
    for j, size in enumerate(vocab):
        p = 1.0 / (np.arange(1, size + 1) + ZIPF_Q) ** ZIPF_A
        cdfs.append(np.cumsum(p / p.sum()))
        hexes.append(_hex_vocab(size, int(rng.integers(0, 2**32)) | j))
        first.append(rng.normal(0.0, rng.uniform(0.15, 0.6), size).astype(np.float32))
    left = [rng.normal(0.0, 1.0, (vocab[a], LATENT)).astype(np.float32) for a, _ in CROSSES]
    right = [rng.normal(0.0, 1.0, (vocab[b], LATENT)).astype(np.float32) for _, b in CROSSES]
    return _Teacher(
        cdfs=cdfs,
        hexes=hexes,
        cat_missing=rng.choice([0.0, 0.0, 0.05, 0.2, 0.45], NUM_CAT),
        first=first,
        left=left,
        right=right,
        int_mu=rng.uniform(0.0, 4.0, NUM_INT),
        int_sigma=rng.uniform(0.8, 2.2, NUM_INT),
        int_missing=rng.choice([0.0, 0.02, 0.2, 0.45], NUM_INT),
        int_weight=rng.normal(0.0, 0.5, NUM_INT),
        int_freq=rng.uniform(0.5, 2.0, NUM_INT),
        gate=rng.normal(0.0, 0.6, vocab[1]).astype(np.float32),
    )


def _chunk(
    t: _Teacher, seed: int, index: int, rows: int
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Ranks, missing masks, integer values and teacher logits (without bias) for one chunk."""
    rng = np.random.default_rng([seed, 1, index])
    ranks = np.stack([np.minimum(np.searchsorted(cdf, rng.random(rows)), len(cdf) - 1) for cdf in t.cdfs])
    cat_miss = rng.random((NUM_CAT, rows)) < t.cat_missing[:, None]
    ints = np.floor(np.exp(t.int_mu[:, None] + t.int_sigma[:, None] * rng.standard_normal((NUM_INT, rows))))
    ints[1] -= 3  # like Criteo's I2, some values are negative
    int_miss = rng.random((NUM_INT, rows)) < t.int_missing[:, None]

    logit = np.zeros(rows, dtype=np.float64)
    for j in range(NUM_CAT):
        logit += np.where(cat_miss[j], 0.0, t.first[j][ranks[j]])
    cross = np.zeros(rows)
    for c, (a, b) in enumerate(CROSSES):
        dot = np.einsum("nk,nk->n", t.left[c][ranks[a]], t.right[c][ranks[b]]) * 0.35
        cross += np.where(cat_miss[a] | cat_miss[b], 0.0, dot)
    logs = np.log1p(np.maximum(ints, 0.0))
    numeric = np.where(int_miss, 0.0, t.int_weight[:, None] * np.sin(t.int_freq[:, None] * logs)).sum(0)
    numeric += t.gate[ranks[1]] * np.where(int_miss[0], 0.0, logs[0] - 1.5)  # numeric x categorical
    logit += 2.0 * np.tanh(0.6 * cross) + numeric + 0.5 * rng.standard_normal(rows)
    return ranks, list(cat_miss), ints.astype(np.int64), int_miss, logit


def _tags(seed: int, index: int, rows: int, most: int) -> tuple[list[str], np.ndarray]:
    """(the `tags` column: up to `most` tags joined by `|`, "" = none; their teacher logit) of a chunk.

    Its own random streams, so the Criteo columns are the same bytes with or without tags."""
    effect = np.random.default_rng([seed, 3]).normal(0.0, 1.0, TAG_VOCAB)
    rng = np.random.default_rng([seed, 4, index])
    p = 1.0 / (np.arange(1, TAG_VOCAB + 1) + 20.0) ** 1.1
    ranks = np.minimum(np.searchsorted(np.cumsum(p / p.sum()), rng.random((rows, most))), TAG_VOCAB - 1)
    counts = np.minimum(rng.poisson(TAG_MEAN, rows), most)
    used = np.arange(most) < counts[:, None]
    logit = TAG_WEIGHT * np.where(used, effect[ranks], 0.0).sum(1) / np.maximum(counts, 1)
    names = np.array([f"tag{k:03d}" for k in range(TAG_VOCAB)], dtype=object)
    text = [TAG_SEPARATOR.join(names[r[:c]]) for r, c in zip(ranks, counts, strict=True)]
    return text, logit


def synth_spec(tags_max_len: int = 8, pooling: str = "mean", joined: bool = False) -> dict[str, Any]:
    """The dataset spec of a `--tags` file: Criteo's, plus its last column `tags` as a list field (or,
    `joined`, as one categorical value per combination, for comparison)."""
    spec = preset_dict("criteo")
    spec.update(dataset_id="criteo_tags", columns=[*spec["columns"], "tags"])
    field: dict[str, Any] = {"name": "tags", "min_count": 10}
    if not joined:
        field.update(type="list", separator=TAG_SEPARATOR, max_len=tags_max_len, pooling=pooling)
    spec["fields"] = [*spec["fields"], field]
    return spec


def _calibrate(logit: np.ndarray, target: float = TARGET_CTR) -> float:
    """The bias that makes the mean click probability `target` (bisection)."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(logit + mid)))) > target:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def write_synthetic_criteo(
    path: Path,
    rows: int,
    seed: int = 0,
    on_rows: Callable[[int], None] | None = None,
    *,
    force: bool = False,
    max_vocab: int | None = None,
    tags: int = 0,
) -> Path:
    """Write `rows` rows of label, I1..I13, C1..C26 (tab-separated, empty = missing) to `path`.

    The file appears whole or not at all. An existing file is replaced only if this function wrote
    it (a hidden stamp next to it records its size and mtime) or with `force`: a user's real log is
    never overwritten by mistake. `on_rows(n)` is called after each chunk of `n` rows (for a progress bar).
    `max_vocab` caps every categorical field's vocabulary (a small-vocabulary dataset, where the scale of a
    vocabulary-dependent embedding init shows; None: Criteo's mix of tiny and huge fields).
    `tags` > 0 adds a last column `tags`, a list of up to `tags` tokens that carry signal (read it with
    `synth_spec()`: `tts-data synth --tags` writes that spec next to the file).
    """
    path = Path(path)
    check_synth_args(path, rows, seed, force, max_vocab)
    if tags < 0:
        raise UserError(f"--tags must be non-negative (got {tags})")
    t = _teacher(seed, max_vocab)
    calibration = _chunk(t, seed, CALIBRATION, 50_000)[4]
    t.bias = _calibrate(calibration + (_tags(seed, CALIBRATION, 50_000, tags)[1] if tags else 0.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    label_rng = np.random.default_rng([seed, 2])
    try:
        with open(tmp, "wb") as fh:
            for index, start in enumerate(range(0, rows, CHUNK_ROWS)):
                n = min(CHUNK_ROWS, rows - start)
                ranks, cat_miss, ints, int_miss, logit = _chunk(t, seed, index, n)
                tag_text, tag_logit = _tags(seed, index, n, tags) if tags else ([], 0.0)
                logit = logit + tag_logit
                labels = (label_rng.random(n) < 1.0 / (1.0 + np.exp(-(logit + t.bias)))).astype(np.int8)
                cols: dict[str, pl.Series] = {"label": pl.Series(labels)}
                for i in range(NUM_INT):
                    cols[f"I{i + 1}"] = pl.Series(ints[i]).scatter(np.flatnonzero(int_miss[i]), None)
                for j in range(NUM_CAT):
                    cols[f"C{j + 1}"] = t.hexes[j].gather(ranks[j]).scatter(np.flatnonzero(cat_miss[j]), None)
                if tags:
                    cols["tags"] = pl.Series(tag_text, dtype=pl.String)
                pl.DataFrame(cols).write_csv(
                    fh, separator="\t", include_header=False, null_value="", quote_style="never"
                )
                if on_rows is not None:
                    on_rows(n)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    stat = path.stat()
    atomic_write_text(_stamp(path), json.dumps({"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}) + "\n")
    return path


def _stamp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tts-synth.json")


def check_synth_args(path: Path, rows: int, seed: int, force: bool, max_vocab: int | None = None) -> None:
    """Refuse bad arguments before any work (the CLI calls it before drawing its progress bar)."""
    if max_vocab is not None and max_vocab < 2:
        raise UserError(f"--max-vocab must be at least 2 (got {max_vocab})")
    if rows < 1:
        raise UserError(f"--rows must be at least 1 (got {rows})")
    if seed < 0:
        raise UserError(f"--seed must be non-negative (got {seed})")
    _check_replaceable(Path(path), force)


def _check_replaceable(path: Path, force: bool) -> None:
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_file() or path.is_symlink():
        raise UserError(f"--out {path} exists and is not a regular file")
    if force:
        return
    try:
        stamp = json.loads(_stamp(path).read_text())
        stat = path.stat()
        ours = stamp == {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise UserError(f"{path} exists and tts-data synth did not write it (pass --force to replace it)")
