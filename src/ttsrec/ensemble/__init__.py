"""The ensemble vocabulary every stage shares, one definition each (a low floor: it imports only
`ttsrec.errors`, `ttsrec.utils` and `ttsrec.repository.naming`):

- `order`: which members `ensemble_mM` holds (the evaluated curves and the served models agree);
- `merge`: merge kinds and fitting member weights on the validation split;
- `metrics`: AUC and logloss of a logit vector;
- `session`: the onnxruntime session every stage runs an ONNX graph with;
- `modes`: the names of what a bench row measures;
- `runs`: the one reader of a `tts-train` run folder (member checkpoints in member order).
"""
