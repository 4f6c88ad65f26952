"""`Client`: predictions from a served ensemble (or fused graph) with numpy in, numpy out."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ttsrec.client.errors import ClientError, DeadlineExceededError
from ttsrec.client.model_info import ModelInfo
from ttsrec.client.transport import Transport
from ttsrec.client.utils import DEFAULT_TIMEOUT_S
from ttsrec.data.feature_map import FeatureMap
from ttsrec.errors import UserError
from ttsrec.repository import naming
from ttsrec.utils.common import sigmoid

Prediction = tuple[np.ndarray, np.ndarray]
"""(prob, logit), each float32 [B]."""


class Client:
    """Query one model on one server.

    `predict` takes int ids [B, F] (or one row [F]), splits batches above the model's `max_batch_size`
    (read from the server) and returns (prob, logit) as float32 [B]. Bad input raises `ClientError`
    (exit 2); a server that is down, late or shedding load raises a `ClientRuntimeError` (exit 1); both
    name the server and the model. `timeout_s` is the deadline of one `predict` call (all its split
    batches together), sent to the server as each request's timeout so an overloaded server rejects
    early. `transport` replaces the network layer (tests).
    """

    def __init__(self, url: str, protocol: str = "grpc", model: str = "ensemble_m8", *,
                 timeout_s: float = DEFAULT_TIMEOUT_S, feature_map: FeatureMap | Path | str | None = None,
                 split_batches: bool = True, max_workers: int = 4, transport: Transport | None = None):
        self.transport = transport if transport is not None else Transport(url, protocol, timeout_s)
        self.url, self.protocol, self.model = self.transport.url, self.transport.protocol, model
        self.timeout_s = self.transport.timeout_s
        self.split_batches = split_batches
        self.max_workers = max_workers
        self._feature_map = feature_map
        self._encoder: Any = None
        self._info: ModelInfo | None = None
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.transport.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r}, protocol={self.protocol!r}, model={self.model!r})"

    # -- metadata ----------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        """The served model's config (fetched once): input width, batch limit, outputs, members."""
        if self._info is None:
            with self._lock:
                if self._info is None:
                    config = self.transport.model_config(self.model)
                    try:
                        self._info = ModelInfo.from_config(config)
                    except (KeyError, ValueError, TypeError) as err:
                        raise self._error(f"unexpected model config ({err})") from None
        return self._info

    def is_ready(self) -> bool:
        return self.transport.is_ready(self.model)

    # -- predictions -------------------------------------------------------------------------

    def infer(self, feat_ids: Any, timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """All outputs of the model, each [B, ...], batches split to `max_batch_size`; all parts share
        one deadline (`timeout_s`, default the client's), each sent with the time that is left."""
        info = self.info
        if info.is_raw:
            raise self._error("this model takes raw records (one input per field, tts-export --raw-inputs): "
                              "use predict_records, or its ids model "
                              f"{info.parameters.get('ids_model', '')!r} for feat_ids")
        ids = self._check_ids(feat_ids, info)
        return self._split(len(ids), lambda i, j, left: self.transport.infer(
            self.model, info.input_name, ids[i:j], info.outputs, timeout_s=left), timeout_s)

    def infer_records(self, rows: Sequence[Mapping[str, Any]],
                      timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """All outputs of a raw model (`raw_ensemble_mM`, `raw_fused_mM`) for raw records, each [B, ...]:
        the records are laid out as the model's raw columns and checked here (`ttsrec.client.raw`), encoded
        into ids by the served graph; batches split and deadline as in `infer`."""
        from ttsrec.client.raw import raw_columns

        info = self.info
        if not info.is_raw:
            raise self._error("this model takes feat_ids, not raw records (export with --raw-inputs for "
                              "raw_* models)")
        try:
            columns = raw_columns(info.raw_inputs, rows, info.max_string_bytes)
        except ClientError as err:
            raise self._error(str(err)) from None
        types = [f.datatype for f in info.raw_inputs]
        names = [f.name for f in info.raw_inputs]

        def send(i: int, j: int, left: float) -> dict[str, np.ndarray]:
            part = columns.slice(i, j)
            payloads = part.payloads()
            return self.transport.infer_raw(self.model, list(zip(names, types, payloads, strict=True)),
                                            part.rows, info.outputs, timeout_s=left)

        return self._split(columns.rows, send, timeout_s)

    def _split(self, rows: int, send: Any, timeout_s: float | None) -> dict[str, np.ndarray]:
        """`send(start, stop, seconds_left)` per part of at most `max_batch_size` rows, under one deadline."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        info = self.info
        limit = info.max_batch_size
        if limit and rows > limit and not self.split_batches:
            raise self._error(f"batch of {rows} rows is above the model's max_batch_size {limit}")
        if rows == 0:
            return {name: np.zeros((0, 1), np.float32) for name in info.outputs}
        step = limit if limit else rows
        parts = []
        for i in range(0, rows, step):
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceededError(f"deadline passed after {i} of {rows} rows", url=self.url,
                                            model=self.model)
            parts.append(send(i, min(i + step, rows), left))
        return {name: np.concatenate([p[name] for p in parts]) for name in info.outputs}

    def predict(self, feat_ids: Any, timeout_s: float | None = None) -> Prediction:
        """(prob, logit) float32 [B] for int ids [B, F]."""
        return self._prediction(self.infer(feat_ids, timeout_s))

    def predict_generation(self, feat_ids: Any, generation: int | None = None,
                           timeout_s: float | None = None) -> Any:
        """`GenerationPrediction(prob, logit, generation)`: `predict` plus the generation that made the answer
        (a repository with generations, `tts-deploy`); `generation` pins one. `ttsrec.client.generations`."""
        from ttsrec.client.generations import predict_generation

        return predict_generation(self, feat_ids, generation, timeout_s)

    def _prediction(self, out: dict[str, np.ndarray]) -> Prediction:
        if naming.LOGIT in out:
            logit = out[naming.LOGIT].reshape(-1)
        elif naming.LOGIT_SUM in out and naming.MEMBER_COUNT in out:  # one shard's partial ensemble
            total, count = out[naming.LOGIT_SUM].reshape(-1), out[naming.MEMBER_COUNT].reshape(-1)
            logit = (total / count).astype(np.float32)
        else:
            raise self._error(f"model has no `{naming.LOGIT}` output (outputs: {', '.join(out)})")
        prob = out[naming.PROB].reshape(-1) if naming.PROB in out else sigmoid(logit)
        return prob, logit

    def predict_records(self, rows: Sequence[Mapping[str, Any]],
                        feature_map: FeatureMap | Path | str | None = None,
                        timeout_s: float | None = None) -> Prediction:
        """Predict raw records (dicts keyed by raw column names, e.g. Criteo `I1`..`C26`).

        A raw model (`raw_ensemble_mM`, `raw_fused_mM`, from `tts-export --raw-inputs`; told apart by its
        config) gets the records themselves and encodes them in the served graph: no feature map needed
        (one given is still checked against the server's), every record must carry every raw column, and
        values are checked here first (`infer_records`). Any other model gets ids encoded on the client
        with the repository's `feature_map.json` exactly as training data was (`RecordEncoder`; an absent
        key is a missing value there). The feature map must be the one the served model was exported with:
        its hash is compared with the `ttsrec.feature_map_hash` the server advertises, and a mismatch is
        refused (`ClientError`)."""
        if self.info.is_raw:
            if feature_map is not None:
                self.check_feature_map(_load_feature_map(feature_map))
            return self._prediction(self.infer_records(rows, timeout_s))
        return self.predict(self.encoder(feature_map).encode(rows), timeout_s)

    def check_feature_map(self, fmap: FeatureMap) -> None:
        """Refuse a local feature map whose hash differs from the one the server advertises."""
        served = self.info.parameters.get("feature_map_hash")
        if served and served != fmap.hash:
            raise self._error(f"local feature map {fmap.hash} does not match the served model's {served}: "
                              "records would be encoded with the wrong ids (use the repository's "
                              f"{naming.FEATURE_MAP_FILE})")

    def encoder(self, feature_map: FeatureMap | Path | str | None = None) -> Any:
        """The `RecordEncoder` for `feature_map` (a FeatureMap, a feature_map.json, or a repository),
        once its hash matches the served model's (`check_feature_map`)."""
        from ttsrec.data.encode import RecordEncoder

        if feature_map is not None:
            fmap = _load_feature_map(feature_map)
            self.check_feature_map(fmap)
            return RecordEncoder(fmap)
        if self._encoder is None:
            if self._feature_map is None:
                raise ClientError("predict_records needs a feature map: pass feature_map= (the repository "
                                  "folder or its feature_map.json) to Client or predict_records",
                                  url=self.url, model=self.model)
            fmap = _load_feature_map(self._feature_map)
            self.check_feature_map(fmap)
            self._encoder = RecordEncoder(fmap)
        return self._encoder

    # -- concurrency -------------------------------------------------------------------------

    def predict_async(self, feat_ids: Any) -> Future[Prediction]:
        """Start `predict` on the client's thread pool; the future raises what `predict` would."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="ttsrec-client")
        return self._pool.submit(self.predict, feat_ids)

    def predict_many(self, batches: Iterable[Any], concurrency: int = 4) -> list[Prediction]:
        """Predict several batches with up to `concurrency` requests in flight; results in order."""
        with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="ttsrec-client") as pool:
            return list(pool.map(self.predict, batches))

    # -- internals ---------------------------------------------------------------------------

    def _check_ids(self, feat_ids: Any, info: ModelInfo) -> np.ndarray:
        ids = np.asarray(feat_ids)
        if ids.dtype.kind not in "iu":
            raise self._error(f"feat_ids must be integer ids (int64), got dtype {ids.dtype}")
        if ids.ndim == 1 and ids.shape[0] == info.num_fields:
            ids = ids.reshape(1, -1)
        if ids.ndim != 2 or ids.shape[1] != info.num_fields:
            raise self._error(f"feat_ids must have shape [B, {info.num_fields}], got {list(ids.shape)}")
        return np.ascontiguousarray(ids, dtype=np.int64)

    def _error(self, message: str) -> ClientError:
        return ClientError(message, url=self.url, model=self.model)


def _load_feature_map(source: FeatureMap | Path | str) -> FeatureMap:
    if isinstance(source, FeatureMap):
        return source
    try:
        return FeatureMap.load(Path(source))
    except UserError as err:
        raise ClientError(str(err)) from None
