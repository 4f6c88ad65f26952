"""What `tts-bench -u URL` learns from the server alone: M values, members, weight bytes and precision.

The exporter writes them into each ensemble_mN / fused_mN config as Triton `parameters` (`ttsrec.members`,
`ttsrec.weight_bytes`, `ttsrec.precision`); the repository index gives the names. No local copy needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ttsrec.bench.targets import model_config

_M_RE = re.compile(r"^(?:ensemble|fused)_m(\d+)$")


def parameter(config: dict[str, Any], key: str) -> str | None:
    """A string parameter of a model config in Triton's JSON form (None when absent)."""
    value = config.get("parameters", {}).get(key)
    return value.get("string_value") if isinstance(value, dict) else None


@dataclass
class ServedInfo:
    precision: str | None = None
    weight_bytes: dict[int, int] = field(default_factory=dict)
    members: dict[int, list[str]] = field(default_factory=dict)
    features: int | None = None
    """Width of the request tensor (fields per row)."""


def served_info(url: str, protocol: str, served: set[str]) -> ServedInfo:
    """Read every ensemble_mN / fused_mN config once (ensemble first: it names the members)."""
    info = ServedInfo()
    for name in sorted(served, key=lambda n: (not n.startswith("ensemble"), n)):
        match = _M_RE.match(name)
        if not match:
            continue
        m = int(match.group(1))
        config = model_config(url, protocol, name)
        if info.features is None and config.get("input"):
            info.features = int(config["input"][0]["dims"][-1])
        info.precision = info.precision or parameter(config, "ttsrec.precision")
        members = parameter(config, "ttsrec.members")
        if members and m not in info.members:
            info.members[m] = members.split(",")
        weight = parameter(config, "ttsrec.weight_bytes")
        if weight and weight.isdigit() and m not in info.weight_bytes:
            info.weight_bytes[m] = int(weight)
    return info
