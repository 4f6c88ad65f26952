"""`ShardedClient`: one request fanned out to K shard servers at once, merged into the ensemble mean.

Each shard's `shard_sum` ensemble returns the sum of its members' logits and their count, so
sum(logit_sum) / sum(member_count) equals the mean over all members, whichever shards answered.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ttsrec.client.client import Client, sigmoid
from ttsrec.client.errors import ClientError
from ttsrec.repository import naming


@dataclass
class ShardedResult:
    """The merged prediction and who contributed; unpacks like `Client.predict`: `prob, logit = result`."""

    prob: np.ndarray
    logit: np.ndarray
    members: list[str]
    """Member models whose logits are in the mean (a fused shard model is named `model@url`)."""
    shards: list[str]
    """URLs of the shards that answered."""
    failed: dict[str, str] = field(default_factory=dict)
    """URL -> error, for shards left out (only with `min_members`)."""

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.prob, self.logit))

    @property
    def complete(self) -> bool:
        return not self.failed


class ShardedClient:
    """Average over K shard servers (`tts-export --shards K`, `tts-serve OUT --shards`).

    Without `min_members`, every shard must answer. With `min_members=N`, a shard that fails or does
    not answer within `timeout_s` is left out as long as the members that did answer number at least N.
    """

    def __init__(self, urls: Sequence[str], protocol: str = "grpc", model: str = naming.SHARD_ENSEMBLE, *,
                 min_members: int | None = None, timeout_s: float = 30.0):
        if not urls:
            raise ClientError("ShardedClient needs at least one shard url")
        if min_members is not None and min_members < 1:
            raise ClientError(f"min_members must be >= 1, got {min_members}")
        self.clients = [Client(url, protocol, model, timeout_s=timeout_s) for url in urls]
        if len({c.url for c in self.clients}) != len(self.clients):
            raise ClientError(f"duplicate shard urls: {', '.join(urls)}")
        self.model = model
        self.min_members = min_members
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(4 * len(urls), thread_name_prefix="ttsrec-shard")

    @property
    def urls(self) -> list[str]:
        return [c.url for c in self.clients]

    def __enter__(self) -> ShardedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        for client in self.clients:
            client.close()

    def members(self) -> dict[str, list[str]]:
        """Member models per shard url (from each shard ensemble's steps); unreachable shards left out."""
        out = {}
        for client in self.clients:
            try:
                out[client.url] = list(client.info.members)
            except ClientError:
                continue
        return out

    def predict(self, feat_ids: Any) -> ShardedResult:
        """Call all shards concurrently; the answer waits at most `timeout_s` for any shard."""
        ids = np.asarray(feat_ids)
        futures = {self._pool.submit(self._ask, client, ids): client for client in self.clients}
        # Without a quorum the first failure decides; with one, wait for all (up to the deadline).
        done, _ = wait(futures, timeout=self.timeout_s,
                       return_when=FIRST_EXCEPTION if self.min_members is None else ALL_COMPLETED)
        answers: list[tuple[Client, dict[str, np.ndarray], tuple[str, ...]]] = []
        failed: dict[str, str] = {}
        bad_input: ClientError | None = None
        cut_short = self.min_members is None and any(f.exception() for f in done)
        for future, client in futures.items():
            if future not in done:
                future.cancel()
                if not cut_short:  # else it simply was not awaited once another shard had failed
                    failed[client.url] = f"no answer within {self.timeout_s:g}s"
                continue
            err = future.exception()
            if err is None:
                answers.append((client, *future.result()))
            else:
                failed[client.url] = str(err)
                if isinstance(err, ClientError) and err.bad_input:
                    bad_input = err
        if bad_input is not None:  # the request itself is wrong: leaving shards out would not help
            raise bad_input
        members = [m for _, _, names in answers for m in names]
        answered = sum(_count(out, names) for _, out, names in answers)
        if self.min_members is None and failed:
            raise ClientError(f"{len(failed)} of {len(self.clients)} shards failed and no min_members "
                              f"quorum is set: {_fmt_failed(failed)}", model=self.model)
        if self.min_members is not None and answered < self.min_members:
            raise ClientError(f"only {answered} members answered, fewer than "
                              f"min_members={self.min_members}: {_fmt_failed(failed)}", model=self.model)
        logit_sum = sum(out[naming.LOGIT_SUM].reshape(-1).astype(np.float64) for _, out, _ in answers)
        count = sum(out[naming.MEMBER_COUNT].reshape(-1).astype(np.float64) for _, out, _ in answers)
        logit = (logit_sum / count).astype(np.float32)
        return ShardedResult(prob=sigmoid(logit), logit=logit, members=members,
                             shards=[c.url for c, _, _ in answers], failed=failed)

    def _ask(self, client: Client, ids: np.ndarray) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
        info = client.info
        missing = {naming.LOGIT_SUM, naming.MEMBER_COUNT} - set(info.outputs)
        if missing:
            raise ClientError(f"not a shard ensemble (no {', '.join(sorted(missing))} output; outputs: "
                              f"{', '.join(info.outputs)})", url=client.url, model=client.model)
        # A fused shard model has no steps to name: it stands for its members.
        return client.infer(ids), info.members or (f"{client.model}@{client.url}",)


def _fmt_failed(failed: dict[str, str]) -> str:
    return "; ".join(f"{url}: {msg}" for url, msg in failed.items()) or "no shard answered"


def _count(out: dict[str, np.ndarray], names: tuple[str, ...]) -> int:
    """Members behind one shard's answer: its `member_count` (names of steps for an empty batch)."""
    counts = out[naming.MEMBER_COUNT].reshape(-1)
    return int(counts[0]) if len(counts) else len(names)
