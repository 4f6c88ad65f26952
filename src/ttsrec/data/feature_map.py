"""`feature_map.json`: the contract between data preparation, training, export and clients.

Fields in order; each field maps raw tokens to field-local ids, id 0 being the field's OOV id.
The content hash ties every checkpoint and exported member to the exact map it was built on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from pathlib import Path
from typing import Any, Literal

from ttsrec.errors import UserError
from ttsrec.repository.naming import FEATURE_MAP_FILE
from ttsrec.utils.atomic import atomic_write_text

FieldKind = Literal["categorical", "numeric", "list"]
LIST_ATTRS = ("separator", "max_len", "pooling")


@dataclass
class Field:
    """One input column of the member models (`feat_ids[:, i]`)."""

    name: str
    kind: FieldKind
    vocab: list[str]
    """Encoded tokens; token `vocab[i]` has id `i + 1`, everything else is id 0 (OOV)."""
    source: str = ""
    """Raw column(s) it is computed from."""
    preprocess: str = "none"
    """Name of the transform applied to the raw value before lookup (see `ttsrec.data.transforms`)."""
    separator: str = ""
    max_len: int = 0
    """A list field (kind `list`) fills `max_len` columns of `feat_ids`: its first tokens' ids, then
    its padding id `pad_id` (the last id, never OOV, never a token), pooled into one vector by `pooling`."""
    pooling: str = ""

    @property
    def is_list(self) -> bool:
        return self.kind == "list"

    @property
    def width(self) -> int:
        """Columns of `feat_ids` the field fills."""
        return self.max_len if self.is_list else 1

    @property
    def pad_id(self) -> int:
        """A list field's padding id (one past its last token); -1 for a one-value field, which has none."""
        return len(self.vocab) + 1 if self.is_list else -1

    @property
    def vocab_size(self) -> int:
        """Ids of the field: OOV, the tokens and, for a list field, the padding id."""
        return len(self.vocab) + (2 if self.is_list else 1)

    def to_dict(self) -> dict[str, Any]:
        """A one-value field without the list attributes, so its map's bytes and hash are unchanged."""
        data = dict(vars(self))
        return data if self.is_list else {k: v for k, v in data.items() if k not in LIST_ATTRS}


@dataclass
class FeatureMap:
    dataset_id: str
    fields: list[Field]
    label: str = "label"
    spec: dict[str, Any] = field(default_factory=dict)
    """The dataset spec (preset or user YAML) that produced the map, so raw records encode the same way."""

    @property
    def num_fields(self) -> int:
        return len(self.fields)

    @property
    def vocab_sizes(self) -> list[int]:
        return [f.vocab_size for f in self.fields]

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def widths(self) -> list[int]:
        return [f.width for f in self.fields]

    @property
    def width(self) -> int:
        """Columns of `feat_ids` (the number of fields unless a field is a list)."""
        return sum(self.widths)

    @property
    def column_vocab_sizes(self) -> list[int]:
        """The vocab size behind each `feat_ids` column (a list field's repeated over its columns)."""
        return [f.vocab_size for f in self.fields for _ in range(f.width)]

    @property
    def bags(self) -> list[list[Any] | None]:
        """Per field `[max_len, pooling]` for a list field, else None: what a member's embedding layer
        needs besides the vocab sizes (recorded in its checkpoint)."""
        return [[f.max_len, f.pooling] if f.is_list else None for f in self.fields]

    @property
    def has_lists(self) -> bool:
        return any(f.is_list for f in self.fields)

    def layout(self) -> list[dict[str, Any]]:
        """`feat_ids` column layout per field (name, first column, width, pad id): configs and manifests."""
        out, col = [], 0
        for f in self.fields:
            entry: dict[str, Any] = {"name": f.name, "start": col, "width": f.width}
            if f.is_list:
                entry.update(pad_id=f.pad_id, pooling=f.pooling, separator=f.separator)
            out.append(entry)
            col += f.width
        return out

    def to_dict(self) -> dict[str, Any]:
        body = {
            "dataset_id": self.dataset_id,
            "label": self.label,
            "num_fields": self.num_fields,
            "vocab_sizes": self.vocab_sizes,
            "spec": self.spec,
            "fields": [f.to_dict() for f in self.fields],
        }
        return {**body, "hash": _content_hash(body)}

    @cached_property
    def hash(self) -> str:
        """Computed once: a real vocabulary holds ~1M tokens (treat the map as frozen)."""
        return self.to_dict()["hash"]

    def save(self, path: Path) -> None:
        atomic_write_text(Path(path), dumps_indented(self.to_dict()) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureMap:
        fields = [Field(**f) for f in data["fields"]]
        fmap = cls(dataset_id=data["dataset_id"], fields=fields, label=data.get("label", "label"),
                   spec=data.get("spec", {}))
        if "hash" in data and data["hash"] != fmap.hash:
            raise UserError("feature map content does not match its recorded hash (edited or corrupt file)")
        return fmap

    @classmethod
    def load(cls, path: Path) -> FeatureMap:
        path = Path(path)
        if path.is_dir():
            path = path / FEATURE_MAP_FILE
        if not path.is_file():
            raise UserError(f"feature map not found: {path}")
        try:
            data = json.loads(path.read_text())
            return cls.from_dict(data)
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(f"{path} is not a valid {FEATURE_MAP_FILE} ({err})") from err


def _content_hash(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def dumps_indented(value: Any, level: int = 0) -> str:
    """`json.dumps(value, indent=1)`, byte for byte, without its pure-Python encoder (which an `indent`
    selects): a million-token vocabulary is one C-encoded string per token instead of seconds of Python."""
    pad = "\n" + " " * (level + 1)
    if isinstance(value, dict) and value:
        items = (f"{encode_basestring_ascii(k)}: {dumps_indented(v, level + 1)}" for k, v in value.items())
        return "{" + pad + ("," + pad).join(items) + "\n" + " " * level + "}"
    if isinstance(value, list) and value:
        if all(type(v) is str for v in value):
            items = map(encode_basestring_ascii, value)
        else:
            items = (dumps_indented(v, level + 1) for v in value)
        return "[" + pad + ("," + pad).join(items) + "\n" + " " * level + "]"
    return json.dumps(value)
