"""A tiny dataset with list fields, for the list-field tests: a CSV whose `tags` column carries signal and
every edge case (empty string, separators only, more tokens than max_len, unseen and repeated tokens,
missing values), its spec, and an independent reference of what `prepare` must give each row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

TAGS_SPEC = """
dataset_id: tags
label: click
min_count: 2
fields:
  - user
  - item
  - {name: tags, type: list, separator: "|", max_len: 4, pooling: mean}
  - {name: tags_sum, source: tags, type: list, separator: "|", max_len: 3, pooling: sum}
"""
EDGE_TAGS = ["", "|||", "a|b|c|d|e|f", "a|never1|b", "a|a|a", None, "|a||b|", " a|b ", "zz|a", "b"]
"""Edge cases, first rows of the file (None: the cell is empty, as "" is in a CSV)."""
TAGS = [chr(ord("a") + k) for k in range(12)]
SMALL = {"embed_dim": 4, "mlp_dims": [16]}
SMALL_BY_BACKBONE = {"fm": {"embed_dim": 4}, "dcn": {**SMALL, "num_cross_layers": 1},
                     "dcnv2": {**SMALL, "num_cross_layers": 1},
                     "wukong": {**SMALL, "num_layers": 1, "num_embed_lcb": 2, "num_embed_fmb": 2, "rank": 2,
                                "fm_mlp_dims": [8]},
                     "rankmixer": {**SMALL, "num_layers": 1}, "finalmlp": {**SMALL, "num_heads": 1}}


def write_tags_csv(path: Path, rows: int = 3000, seed: int = 0) -> Path:
    """click,user,item,tags: the label follows the mean effect of a row's tags (and a little the user)."""
    rng = np.random.default_rng(seed)
    effect = rng.normal(0, 1.5, len(TAGS))
    lines = ["click,user,item,tags"]
    for k in range(rows):
        user, item = f"u{rng.integers(0, 20)}", f"i{rng.integers(0, 30)}"
        if k < len(EDGE_TAGS):
            text = EDGE_TAGS[k] or ""
        else:
            picks = rng.integers(0, len(TAGS), rng.integers(0, 7))
            text = "|".join(TAGS[p] for p in picks)
        picks = [TAGS.index(t) for t in text.split("|") if t in TAGS]
        logit = float(np.mean(effect[picks])) if picks else -0.5
        click = int(rng.random() < 1 / (1 + np.exp(-(logit + (0.3 if user < "u5" else 0.0)))))
        lines.append(f"{click},{user},{item},{text}")
    path.write_text("\n".join(lines) + "\n")
    return path


def reference_ids(text: str | None, vocab: list[str], max_len: int) -> list[int]:
    """What `prepare` must give a list value, written out plainly: non-empty runs between separators, the
    first `max_len`, vocab[i] -> i + 1, anything else 0, then the padding id `len(vocab) + 1`."""
    tokens = [t for t in (text or "").split("|") if t][:max_len]
    ids = [vocab.index(t) + 1 if t in vocab else 0 for t in tokens]
    return ids + [len(vocab) + 1] * (max_len - len(ids))


def train_briefly(model: torch.nn.Module, data: object, seed: int = 0, epochs: int = 1) -> torch.nn.Module:
    from ttsrec.data.loader import iter_batches

    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for epoch in range(epochs):
        for feat_ids, labels in iter_batches(data, "train", 128, shuffle=True, seed=seed + epoch):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(feat_ids).squeeze(1), labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()
