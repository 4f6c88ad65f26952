"""`ShardedClient`: one request fanned out to K shard servers at once, merged into the ensemble mean.

Each shard's `shard_sum` ensemble returns the sum of its members' logits and their count, so
sum(logit_sum) / sum(member_count) equals the mean over all members, whichever shards answered.

Shards are told apart by what they serve, not by their URL: each shard config carries `ttsrec.export_id`,
`ttsrec.shard_index`, `ttsrec.shard_count`, `ttsrec.members` and `ttsrec.feature_map_hash`, and a shard
that repeats another (same export and index, or a member already served), comes from another export,
or was built on another feature map is refused with a `ClientError`. Every shard has its own threads,
so a hung shard holds only its own; every call carries the deadline that is left, and an UNAVAILABLE
shard is retried once while time is left.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ttsrec.client.client import Client
from ttsrec.client.errors import (
    ClientError,
    DeadlineExceededError,
    ServerUnavailableError,
    ShardsFailedError,
)
from ttsrec.client.generations import infer_generation, one_generation
from ttsrec.client.model_info import ModelInfo
from ttsrec.client.transport import Transport
from ttsrec.client.utils import DEFAULT_TIMEOUT_S
from ttsrec.repository import naming
from ttsrec.utils.common import sigmoid

RETRY_PAUSE_S = 0.05
"""Pause before the one retry of an UNAVAILABLE shard (a restarting server, a dropped connection)."""


@dataclass
class ShardedResult:
    """The merged prediction and who contributed; unpacks like `Client.predict`: `prob, logit = result`."""

    prob: np.ndarray
    logit: np.ndarray
    members: list[str]
    """Member models whose logits are in the mean (a fused shard model without names is `model@url`)."""
    shards: list[str]
    """URLs of the shards that answered."""
    failed: dict[str, str] = field(default_factory=dict)
    """URL -> cause, for shards left out (only with `min_members`)."""
    latency_s: dict[str, float] = field(default_factory=dict)
    """URL -> seconds from `predict` handing the request over to that shard's answer (answered shards)."""
    generation: int | None = None
    """The generation every answering shard used (`tts-deploy`; None where the servers do not say)."""

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.prob, self.logit))

    @property
    def complete(self) -> bool:
        """True when every shard answered (no member left out)."""
        return not self.failed


@dataclass(frozen=True)
class ShardIdentity:
    """What a shard serves, from its config parameters (empty strings where an old export lacks them)."""

    url: str
    export_id: str
    shard_index: str
    shard_count: str
    feature_map_hash: str
    members: tuple[str, ...]

    @classmethod
    def of(cls, url: str, info: ModelInfo) -> ShardIdentity:
        p = info.parameters
        return cls(url, p.get("export_id", ""), p.get("shard_index", ""), p.get("shard_count", ""),
                   p.get("feature_map_hash", ""), info.members)


def identity_conflict(new: ShardIdentity, known: Sequence[ShardIdentity]) -> str | None:
    """Why `new` cannot be merged with the shards already admitted, or None."""
    for old in known:
        if new.export_id and old.export_id and new.export_id != old.export_id:
            return (f"shards of different exports: {old.url} is export {old.export_id}, "
                    f"{new.url} is {new.export_id}")
        if new.feature_map_hash and old.feature_map_hash and new.feature_map_hash != old.feature_map_hash:
            return (f"shards built on different feature maps: {old.url} has {old.feature_map_hash}, "
                    f"{new.url} has {new.feature_map_hash}")
        if new.export_id and new.shard_index and (new.export_id, new.shard_index) == (old.export_id,
                                                                                     old.shard_index):
            return (f"duplicate shard: {old.url} and {new.url} both serve shard {new.shard_index} of export "
                    f"{new.export_id} (the same server under two names?)")
        shared = sorted(set(new.members) & set(old.members))
        if shared:
            return f"duplicate members: {', '.join(shared)} served by both {old.url} and {new.url}"
    return None


class ShardedClient:
    """Query K shard servers (one `shard_sum` ensemble each) and merge their partial sums.

    Without `min_members`, every shard must answer; with it, shards that fail or miss the deadline are
    left out (named in `ShardedResult.failed`) as long as at least `min_members` members answered.
    `timeout_s` is the deadline of one `predict`, whatever happens inside it (retries included).
    Shard identities are read at connect (unreachable shards are checked when they first answer).
    """

    def __init__(self, urls: Sequence[str], protocol: str = "grpc", model: str = naming.SHARD_ENSEMBLE, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S, min_members: int | None = None,
                 threads_per_shard: int = 16, retry_unavailable: bool = True,
                 transports: Sequence[Transport] | None = None):
        if not urls and not transports:
            raise ClientError("ShardedClient needs at least one shard url")
        if min_members is not None and min_members < 1:
            raise ClientError(f"min_members must be >= 1, got {min_members}")
        if transports is None:
            transports = [Transport(url, protocol, timeout_s) for url in urls]
        self.clients = [Client(t.url, t.protocol, model, transport=t) for t in transports]
        if len({c.url for c in self.clients}) != len(self.clients):
            raise ClientError(f"duplicate shard urls: {', '.join(c.url for c in self.clients)}")
        self.model = model
        self.min_members = min_members
        self.timeout_s = float(timeout_s)
        self.retry_unavailable = retry_unavailable
        # One pool per shard: a hung shard ties up its own threads only (issue 13).
        self._pools = {c.url: ThreadPoolExecutor(threads_per_shard, thread_name_prefix=f"ttsrec-shard{i}")
                       for i, c in enumerate(self.clients)}
        self._admitted: dict[str, ShardIdentity] = {}
        self._lock = threading.Lock()
        try:
            self.connect()
        except BaseException:
            self.close()
            raise

    @property
    def urls(self) -> list[str]:
        return [c.url for c in self.clients]

    def __enter__(self) -> ShardedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        for client in self.clients:
            client.close()

    # -- identity ----------------------------------------------------------------------------

    def connect(self) -> None:
        """Read every reachable shard's config at once and refuse shards that must not be merged."""
        futures = {self._pools[c.url].submit(self._admit, c): c for c in self.clients}
        wait(futures, timeout=self.timeout_s)
        for future in futures:
            err = future.exception() if future.done() else None
            if isinstance(err, ClientError):
                raise err

    def _admit(self, client: Client) -> ModelInfo:
        """The shard's info, after checking it against the shards admitted so far (once per shard)."""
        info = client.info
        if client.url in self._admitted:
            return info
        missing = {naming.LOGIT_SUM, naming.MEMBER_COUNT} - set(info.outputs)
        if missing:
            raise ClientError(f"not a shard ensemble (no {', '.join(sorted(missing))} output; outputs: "
                              f"{', '.join(info.outputs)})", url=client.url, model=client.model)
        identity = ShardIdentity.of(client.url, info)
        with self._lock:
            if client.url not in self._admitted:
                conflict = identity_conflict(identity, list(self._admitted.values()))
                if conflict:
                    raise ClientError(f"refusing to merge these shards: {conflict}", model=self.model)
                self._admitted[client.url] = identity
        return info

    def members(self) -> dict[str, list[str]]:
        """Member models per shard url; shards not reached yet are left out."""
        return {url: list(identity.members) for url, identity in self._admitted.items()}

    # -- predictions -------------------------------------------------------------------------

    def predict(self, feat_ids: Any, timeout_s: float | None = None) -> ShardedResult:
        """Call all shards concurrently; the answer comes within `timeout_s` (default the client's)."""
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        sent = time.monotonic()
        deadline = sent + limit
        ids = np.asarray(feat_ids)
        seen: dict[str, int | None] = {}
        futures: dict[Future[Any], Client] = {
            self._pools[c.url].submit(self._ask, c, ids, sent, deadline, seen): c for c in self.clients}
        # Without a quorum the first failure decides; with one, wait for all (up to the deadline).
        done, _ = wait(futures, timeout=max(0.0, deadline - time.monotonic()),
                       return_when=FIRST_EXCEPTION if self.min_members is None else ALL_COMPLETED)
        answers: list[tuple[Client, dict[str, np.ndarray], tuple[str, ...], float]] = []
        failed: dict[str, str] = {}
        bad_input: ClientError | None = None
        cut_short = self.min_members is None and any(f.exception() for f in done)
        for future, client in futures.items():
            if future not in done:
                future.cancel()
                if not cut_short:  # else it simply was not awaited once another shard had failed
                    failed[client.url] = f"no answer within {limit:g}s"
                continue
            err = future.exception()
            if err is None:
                answers.append((client, *future.result()))
            else:
                failed[client.url] = str(err)
                if isinstance(err, ClientError):
                    bad_input = err
        if bad_input is not None:  # the request or the setup is wrong: leaving shards out would not help
            raise bad_input
        answers, generation = one_generation(  # a rollout switching shard by shard: never a mixed mean
            answers, seen, lambda c, g: self._ask(c, ids, sent, deadline, seen, g))
        members = [m for _, _, names, _ in answers for m in names]
        answered = sum(_count(out, names) for _, out, names, _ in answers)
        if self.min_members is None and failed:
            raise ShardsFailedError(f"{len(failed)} of {len(self.clients)} shards failed and no min_members "
                                    f"quorum is set: {_fmt_failed(failed)}", failed=failed, model=self.model)
        if self.min_members is not None and answered < self.min_members:
            raise ShardsFailedError(f"only {answered} members answered, fewer than "
                                    f"min_members={self.min_members}: {_fmt_failed(failed)}",
                                    failed=failed, model=self.model)
        logit_sum = sum(out[naming.LOGIT_SUM].reshape(-1).astype(np.float64) for _, out, _, _ in answers)
        count = sum(out[naming.MEMBER_COUNT].reshape(-1).astype(np.float64) for _, out, _, _ in answers)
        logit = (logit_sum / count).astype(np.float32)
        return ShardedResult(prob=sigmoid(logit), logit=logit, members=members,
                             shards=[c.url for c, _, _, _ in answers], failed=failed,
                             latency_s={c.url: t for c, _, _, t in answers}, generation=generation)

    def _ask(self, client: Client, ids: np.ndarray, sent: float, deadline: float,
             seen: dict[str, int | None] | None = None,
             generation: int | None = None) -> tuple[dict[str, np.ndarray], tuple[str, ...], float]:
        """One shard's answer within the deadline; one retry if it was UNAVAILABLE and time is left.
        Its latency counts from `sent`, so time spent waiting for one of the shard's threads shows."""
        for attempt in (0, 1):
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceededError("deadline passed before this shard was asked", url=client.url,
                                            model=client.model)
            try:
                info = self._admit(client)
                out, made_by = infer_generation(client, ids, generation, left)
                if seen is not None:
                    seen[client.url] = made_by
                # A fused shard model without member names stands for its members.
                return out, info.members or (f"{client.model}@{client.url}",), time.monotonic() - sent
            except ServerUnavailableError:
                if attempt or not self.retry_unavailable or deadline - time.monotonic() <= 2 * RETRY_PAUSE_S:
                    raise
                time.sleep(RETRY_PAUSE_S)
        raise AssertionError("unreachable")


def _fmt_failed(failed: dict[str, str]) -> str:
    return "; ".join(f"{url}: {msg}" for url, msg in failed.items()) or "no shard answered"


def _count(out: dict[str, np.ndarray], names: tuple[str, ...]) -> int:
    """Members behind one shard's answer: its `member_count` (names of steps for an empty batch)."""
    counts = out[naming.MEMBER_COUNT].reshape(-1)
    return int(counts[0]) if len(counts) else len(names)


__all__ = ["ShardIdentity", "ShardedClient", "ShardedResult", "identity_conflict"]
