"""What a client needs from a served model's config: input name and width, batch limit, outputs,
and (for ensembles) the member steps. Read from the server, so it always matches what is loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ttsrec.client.transport import config_parameters
from ttsrec.repository import naming


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

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelInfo:
        """From `get_model_config` as JSON (HTTP form, or gRPC `as_json` with its `config` wrapper)."""
        config = config.get("config", config)
        inputs = config.get("input", [])
        if len(inputs) != 1:
            raise ValueError(f"expected one input, got {len(inputs)}")
        (inp,) = inputs
        dims = [int(d) for d in inp.get("dims", [])]
        steps = config.get("ensemble_scheduling", {}).get("step", [])
        members = tuple(step["model_name"] for step in steps
                        if naming.is_member(step["model_name"])
                        and naming.FEAT_IDS in step.get("input_map", {}).values())
        parameters = config_parameters(config)
        if not members and parameters.get("members"):
            members = tuple(m for m in parameters["members"].split(",") if m)
        return cls(name=config.get("name", ""), input_name=inp["name"],
                   input_dtype=inp.get("data_type", "TYPE_INT64").removeprefix("TYPE_"),
                   num_fields=dims[-1] if dims else 0, max_batch_size=int(config.get("max_batch_size", 0)),
                   outputs=tuple(o["name"] for o in config.get("output", [])), members=members,
                   parameters=parameters)
