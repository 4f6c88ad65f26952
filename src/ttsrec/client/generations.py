"""Which generation made an answer, and answers from one generation only.

A repository with generations (`tts-deploy`) serves generation N of every model as Triton version N
(an unchanged member keeps its older version, but the ensembles, merges and fused graphs that answer are
version N), so Triton's `model_version` in each response names the generation. A client can pin one: an
ensemble through its per-generation copy `<ensemble>.gN` (loaded while a rollout keeps generation N), any
other model by asking for version N.

A `predict` whose batch is split into several requests could straddle a switch; its parts are compared
and the call is repeated (a switch takes milliseconds) rather than returning rows of two generations.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ttsrec.client.errors import ClientRuntimeError
from ttsrec.repository.generations import generation_model

ATTEMPTS = 3


class GenerationPrediction(NamedTuple):
    """(prob, logit) float32 [B] and the generation that made them (None: the server did not say)."""

    prob: np.ndarray
    logit: np.ndarray
    generation: int | None


def as_generation(version: str) -> int | None:
    return int(version) if str(version).isdigit() else None


def target(model: str, is_ensemble: bool, generation: int | None) -> tuple[str, str]:
    """(model name, version) that answers for `generation` (None: whatever is live)."""
    if generation is None:
        return model, ""
    return (generation_model(model, generation), "") if is_ensemble else (model, str(generation))


def infer_generation(client: Any, feat_ids: Any, generation: int | None = None,
                     timeout_s: float | None = None) -> tuple[dict[str, np.ndarray], int | None]:
    """All outputs of `client`'s model and the one generation that made every row of them."""
    info = client.info
    infer = getattr(client.transport, "infer_versioned", None)
    if infer is None:  # a transport that cannot say (tests' fakes)
        return client.infer(feat_ids, timeout_s), None
    ids = client._check_ids(feat_ids, info)
    name, version = target(client.model, generation is not None and _is_ensemble(client), generation)
    seen: list[int | None] = []
    for _ in range(ATTEMPTS):
        seen.clear()

        def send(i: int, j: int, left: float) -> dict[str, np.ndarray]:
            out, answered = infer(name, info.input_name, ids[i:j], info.outputs, timeout_s=left,
                                  model_version=version)
            seen.append(as_generation(answered) if generation is None else generation)
            return out

        out = client._split(len(ids), send, timeout_s)
        if len(set(seen)) <= 1:  # the parts of a split batch straddled no switch
            return out, (seen[0] if seen else generation)
    raise ClientRuntimeError(f"parts of one batch kept coming from different generations "
                             f"({sorted(set(seen))})", url=client.url, model=client.model)


def _is_ensemble(client: Any) -> bool:
    """Whether the client's model is an ensemble (pinned through `<name>.gN`), asked once."""
    cached = getattr(client, "_generation_is_ensemble", None)
    if cached is None:
        cached = client.transport.model_config(client.model).get("platform") == "ensemble"
        client._generation_is_ensemble = cached
    return bool(cached)


def predict_generation(client: Any, feat_ids: Any, generation: int | None = None,
                       timeout_s: float | None = None) -> GenerationPrediction:
    """`Client.predict` plus the generation; `generation` pins one."""
    out, made_by = infer_generation(client, feat_ids, generation, timeout_s)
    prob, logit = client._prediction(out)
    return GenerationPrediction(prob, logit, made_by)


def one_generation(answers: list[Any], seen: dict[str, int | None],
                   ask: Any) -> tuple[list[Any], int | None]:
    """`ShardedClient`'s answers, all from one generation. While a rollout switches shard by shard, the
    shards whose answer came from another generation are asked again, pinned (`<ensemble>.gN`) to one
    that every shard holds until all have switched: the newest first, then older ones (a shard that
    already retired the other one still has the one it switched to). Returns the answers and their
    generation; when no generation can be had from every shard, a `ClientRuntimeError`, never a mix."""
    made = {client.url: seen.get(client.url) for client, *_ in answers}
    known = {g for g in made.values() if g is not None}
    if len(known) <= 1:
        return answers, next(iter(known), None)
    failures = []
    for candidate in sorted(known, reverse=True):
        try:
            return [(client, *rest) if made[client.url] == candidate else (client, *ask(client, candidate))
                    for client, *rest in answers], candidate
        except Exception as err:  # that generation is gone from some shard: try the next one
            failures.append(f"generation {candidate}: {err}")
    client = answers[0][0]
    raise ClientRuntimeError(f"shards answered from generations {sorted(known)} and none of them could be "
                             f"had from every shard ({'; '.join(failures)}); not mixing them",
                             url=client.url, model=client.model)
