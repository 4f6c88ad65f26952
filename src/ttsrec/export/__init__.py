"""`tts-export`: member checkpoints -> ONNX -> a Triton model repository whose ensembles average
the members' logits (plus fused graphs, a manifest, and optional shard repositories)."""

from ttsrec.export.writer import export_repository, resolve_m_list

__all__ = ["export_repository", "resolve_m_list"]
