"""What a client needs from a served model's config: input name and width, batch limit, outputs,
and (for ensembles) the member steps. Read from the server, so it always matches what is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    """Member models of an ensemble (steps fed `feat_ids`); empty for a single model."""

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
                        if naming.FEAT_IDS in step.get("input_map", {}).values())
        return cls(name=config.get("name", ""), input_name=inp["name"],
                   input_dtype=inp.get("data_type", "TYPE_INT64").removeprefix("TYPE_"),
                   num_fields=dims[-1] if dims else 0, max_batch_size=int(config.get("max_batch_size", 0)),
                   outputs=tuple(o["name"] for o in config.get("output", [])), members=members)
