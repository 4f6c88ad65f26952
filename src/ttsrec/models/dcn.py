"""DCN: rank-1 (vector) cross network in parallel with an MLP; same wiring as DCNv2."""

from __future__ import annotations

from ttsrec.models.dcnv2 import DCNv2


class DCN(DCNv2):
    backbone = "dcn"
    full_rank = False
