"""Experiments that drive several stages (train then evaluate, export then bench), above the stage
libraries so that no stage imports another: the orthogonality study (test-time scaling on top of
parameter scaling) and the deployment comparison (served ensemble vs one scaled model)."""
