"""Data pipeline: dataset specs and presets, synthetic Criteo data, two-pass preparation into
memory-mappable id splits, the training loader, and the raw-record encoder used by clients."""
