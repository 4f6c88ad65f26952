"""What a client needs from a served model's config: input name and width, batch limit, outputs,
and (for ensembles) the member steps. Read from the server, so it always matches what is loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ttsrec.client.raw import raw_fields
from ttsrec.client.utils import config_parameters
from ttsrec.repository import naming
from ttsrec.repository.raw_inputs import RawInput


@dataclass(frozen=True)
class ModelInfo:
    name: str
    input_name: str
    input_dtype: str
    num_fields: int
    max_batch_size: int
    outputs: tuple[str, ...]
    members: tuple[str, ...]
    """Member models of an ensemble (member steps fed `feat_ids`), else the `ttsrec.members` parameter
    (a fused graph); empty for a single model."""
    parameters: dict[str, str] = field(default_factory=dict)
    """`ttsrec.*` config parameters without the prefix: export_id, feature_map_hash, shard_index..."""
    raw_inputs: tuple[RawInput, ...] = ()
    """A raw model's inputs (`raw_ensemble_mM`, `raw_fused_mM`: one per field, raw records in); () for an id
    model, whose one input is `input_name`."""

    @property
    def is_raw(self) -> bool:
        return bool(self.raw_inputs)

    @property
    def max_string_bytes(self) -> int:
        """Longest string a raw model takes (0: no limit)."""
        return int(self.parameters.get("max_string_bytes") or 0)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelInfo:
        """From `get_model_config` as JSON (HTTP form, or gRPC `as_json` with its `config` wrapper)."""
        config = config.get("config", config)
        inputs = config.get("input", [])
        parameters = config_parameters(config)
        raw = raw_fields(config, parameters) if inputs else ()
        if len(inputs) != 1 and not raw:
            raise ValueError(f"expected one input, got {len(inputs)}")
        inp = inputs[0]
        dims = [int(d) for d in inp.get("dims", [])]
        steps = config.get("ensemble_scheduling", {}).get("step", [])
        members = tuple(step["model_name"] for step in steps
                        if naming.is_member(step["model_name"])
                        and naming.FEAT_IDS in step.get("input_map", {}).values())
        if not members and parameters.get("members"):
            members = tuple(m for m in parameters["members"].split(",") if m)
        num_fields = sum(len(f.fields) for f in raw) if raw else (dims[-1] if dims else 0)
        return cls(name=config.get("name", ""), input_name="" if raw else inp["name"],
                   input_dtype="RAW" if raw else inp.get("data_type", "TYPE_INT64").removeprefix("TYPE_"),
                   num_fields=num_fields, max_batch_size=int(config.get("max_batch_size", 0)),
                   outputs=tuple(o["name"] for o in config.get("output", [])), members=members,
                   parameters=parameters, raw_inputs=raw)
