"""Dataset specs: what a raw file looks like and how each model field is computed from it.

Every preset (`presets/<name>.yaml`) is one of these, and `--preset csv --spec my.yaml` lets a user
describe their own logs the same way. The spec is stored inside `feature_map.json`, so a client can
encode raw records exactly as `prepare` did.
"""

from __future__ import annotations

import codecs
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ttsrec.data import transforms
from ttsrec.errors import UserError

FORMATS = ("text", "parquet", "movielens")
POOLINGS = ("mean", "sum")
"""How a list field's token embeddings become the field's one vector (padding never counts)."""
LIST_KEYS = ("separator", "max_len", "pooling")


@dataclass(frozen=True)
class FieldSpec:
    """One model field: a raw column passed through a named transform, rare tokens -> OOV."""

    name: str
    source: str
    preprocess: str = "none"
    min_count: int = 1
    separator: str | None = None
    """A list field's token separator (`type: list`); None for a one-value field."""
    max_len: int = 0
    """A list field's width: its first `max_len` tokens are kept, shorter lists padded."""
    pooling: str = ""

    @property
    def is_list(self) -> bool:
        return self.max_len > 0

    @property
    def kind(self) -> str:
        return "list" if self.is_list else transforms.kind_of(self.preprocess)

    def to_dict(self) -> dict[str, Any]:
        """The spec entry; a one-value field's has no list keys, so its feature-map hash is unchanged."""
        data = asdict(self)
        if not self.is_list:
            return {k: v for k, v in data.items() if k not in LIST_KEYS}
        return {**{k: v for k, v in data.items() if k not in LIST_KEYS}, "type": "list",
                **{k: data[k] for k in LIST_KEYS}}


@dataclass(frozen=True)
class DatasetSpec:
    dataset_id: str
    label: str
    fields: list[FieldSpec]
    label_transform: str = "binary"
    format: str = "text"
    separator: str = ","
    header: bool = True
    columns: list[str] | None = None
    """Column names of a header-less text file, in order."""
    encoding: str = "utf-8"
    quote_char: str | None = '"'
    """CSV quoting (fields may be quoted, but must not contain newlines); null for none."""
    min_count: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sources(self) -> list[str]:
        """Raw columns the fields read, in first-use order."""
        return list(dict.fromkeys(f.source for f in self.fields))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fields"] = [f.to_dict() for f in self.fields]
        return data

    @classmethod
    def from_dict(cls, data: Any, origin: str = "spec") -> DatasetSpec:
        """Validate a parsed YAML/JSON spec; every mistake is a one-line `UserError`."""
        if not isinstance(data, dict):
            raise UserError(f"{origin}: a spec must be a mapping (got {type(data).__name__})")
        known = {
            "dataset_id",
            "label",
            "label_transform",
            "fields",
            "format",
            "separator",
            "header",
            "columns",
            "encoding",
            "quote_char",
            "min_count",
            "extra",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"{origin}: unknown spec key(s) {unknown}; known: {sorted(known)}")
        for key in ("label", "fields"):
            if key not in data:
                raise UserError(f"{origin}: missing required key '{key}'")
        min_count = _positive_int(data.get("min_count", 1), f"{origin}: min_count")
        entries = data["fields"] or []
        if not isinstance(entries, list):
            raise UserError(f"{origin}: 'fields' must be a list")
        flat = [e for entry in entries for e in (entry if isinstance(entry, list) else [entry])]
        fields = [_field(entry, min_count, f"{origin}: fields[{i}]") for i, entry in enumerate(flat)]
        if not fields:
            raise UserError(f"{origin}: 'fields' must list at least one field")
        names = [f.name for f in fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise UserError(f"{origin}: duplicate field name(s) {dupes}")
        fmt = str(data.get("format", "text"))
        if fmt not in FORMATS:
            raise UserError(f"{origin}: format must be one of {list(FORMATS)} (got {fmt!r})")
        label_transform = str(data.get("label_transform", "binary"))
        transforms.check_label_transform(label_transform, origin)
        separator = _separator(data.get("separator", ","), origin)
        columns = data.get("columns")
        header = bool(data.get("header", columns is None))
        if columns is not None:
            if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
                raise UserError(f"{origin}: columns must be a list of names")
        elif fmt == "text" and not header:
            raise UserError(f"{origin}: a file without header needs 'columns'")
        spec = cls(
            dataset_id=str(data.get("dataset_id", Path(origin).stem)),
            label=str(data["label"]),
            fields=fields,
            label_transform=label_transform,
            format=fmt,
            separator=separator,
            header=header,
            columns=columns,
            encoding=_encoding(data.get("encoding", "utf-8"), origin),
            quote_char=_quote(data.get("quote_char", '"'), origin),
            min_count=min_count,
            extra=dict(data.get("extra") or {}),
        )
        if columns is not None and fmt == "text":
            spec.check_columns(columns, origin)
        return spec

    def check_columns(self, available: list[str], where: str) -> None:
        """Refuse a spec that names columns the data does not have."""
        missing = [c for c in [self.label, *self.sources] if c not in available]
        if missing:
            raise UserError(
                f"{where}: spec names column(s) {missing} not present (has: {', '.join(available)})"
            )


def _field(entry: Any, min_count: int, where: str) -> FieldSpec:
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or "name" not in entry:
        raise UserError(f"{where}: a field is a column name or a mapping with 'name'")
    unknown = sorted(set(entry) - {"name", "source", "preprocess", "min_count", "type", *LIST_KEYS})
    if unknown:
        raise UserError(f"{where}: unknown field key(s) {unknown}")
    if str(entry["name"]).startswith("_") or not str(entry["name"]):
        raise UserError(f"{where}: field name {entry['name']!r} is empty or starts with '_' (reserved)")
    preprocess = str(entry.get("preprocess", "none"))
    transforms.check(preprocess, where)
    base = FieldSpec(
        name=str(entry["name"]),
        source=str(entry.get("source", entry["name"])),
        preprocess=preprocess,
        min_count=_positive_int(entry.get("min_count", min_count), f"{where}: min_count"),
    )
    return _list_field(base, entry, f"{where} {base.name}")


def _list_field(base: FieldSpec, entry: dict[str, Any], where: str) -> FieldSpec:
    """`type: list` adds a separator, a max_len and a pooling; anything else must not name them."""
    kind = entry.get("type", "categorical")
    if kind not in ("categorical", "list"):
        raise UserError(f"{where}: unknown type {kind!r}; known: categorical (default), list")
    named = [k for k in LIST_KEYS if k in entry]
    if kind != "list":
        if named:
            raise UserError(f"{where}: {', '.join(named)} only apply to a list field (add type: list)")
        return base
    if transforms.kind_of(base.preprocess) == "numeric":
        raise UserError(f"{where}: a list field cannot be numeric (preprocess {base.preprocess!r})")
    if base.preprocess != "none":
        raise UserError(f"{where}: a list field's tokens are taken as they are (preprocess none, "
                        f"got {base.preprocess!r})")
    separator = entry.get("separator")
    if separator is None:
        raise UserError(f"{where}: a list field needs a separator (e.g. separator: \"|\")")
    if isinstance(separator, str):
        separator = {"tab": "\t", "\\t": "\t", "comma": ",", "pipe": "|"}.get(separator, separator)
    if not isinstance(separator, str) or len(separator) != 1 or separator in "\n\r":
        raise UserError(f"{where}: a list separator must be one character, not a line break "
                        f"(got {separator!r})")
    if "max_len" not in entry:
        raise UserError(f"{where}: a list field needs max_len (the tokens kept per row, >= 1)")
    max_len = entry["max_len"]
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise UserError(f"{where}: max_len must be an integer >= 1 (got {max_len!r})")
    pooling = entry.get("pooling", "mean")
    if pooling not in POOLINGS:
        raise UserError(f"{where}: unknown pooling {pooling!r}; known: {', '.join(POOLINGS)}")
    return replace(base, separator=separator, max_len=max_len, pooling=pooling)


def _positive_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where} must be a positive integer (got {value!r})")
    return value


def _separator(value: Any, origin: str) -> str:
    value = {"tab": "\t", "\\t": "\t", "comma": ",", "pipe": "|"}.get(value, value)
    if not isinstance(value, str) or len(value) != 1 or value == "\n":
        raise UserError(f"{origin}: separator must be one character (got {value!r})")
    return value


def _encoding(value: Any, origin: str) -> str:
    """A Python codec name whose ASCII bytes mean ASCII (lines and separators are found byte-wise)."""
    try:
        codecs.lookup(str(value))
    except LookupError:
        raise UserError(f"{origin}: unknown encoding {value!r} (e.g. utf-8, latin-1, cp1252)") from None
    if "\n,;|\t".encode(str(value), errors="replace") != b"\n,;|\t":
        raise UserError(f"{origin}: encoding {value!r} is not supported (use an ASCII-based one, e.g. utf-8)")
    return str(value)


def _quote(value: Any, origin: str) -> str | None:
    if value is not None and (not isinstance(value, str) or len(value) != 1):
        raise UserError(f"{origin}: quote_char must be one character or null (got {value!r})")
    return value


def preset_names() -> list[str]:
    folder = resources.files("ttsrec.data") / "presets"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_spec(path: Path) -> DatasetSpec:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"spec file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from err
    return DatasetSpec.from_dict(data, origin=str(path))


def resolve_spec(preset: str, spec: Path | None = None) -> DatasetSpec:
    """The spec for `--preset NAME` (`csv` needs `--spec FILE`; a spec file overrides any preset)."""
    if spec is not None:
        return load_spec(spec)
    if preset == "csv":
        raise UserError("--preset csv needs --spec FILE.yaml describing the columns")
    names = preset_names()
    if preset not in names:
        raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join([*names, 'csv'])}")
    return DatasetSpec.from_dict(preset_dict(preset), origin=f"preset {preset}")


def preset_dict(preset: str) -> dict[str, Any]:
    """The raw YAML mapping of a preset (a starting point for a variant, e.g. another min_count)."""
    return yaml.safe_load((resources.files("ttsrec.data") / "presets" / f"{preset}.yaml").read_text())
