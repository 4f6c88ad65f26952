"""Clients for a served repository: `Client` (one server, one model) and `ShardedClient` (K shard servers),
both on the one transport layer `ttsrec.client.transport`. Errors: `ClientError` (bad input, exit 2) and
`ClientRuntimeError` and its subclasses (server down, deadline, rejected, too few shards; exit 1)."""

from ttsrec.client.client import Client, Prediction
from ttsrec.client.errors import (
    CLIENT_ERRORS,
    ClientError,
    ClientRuntimeError,
    DeadlineExceededError,
    RequestRejectedError,
    ServerUnavailableError,
    ShardsFailedError,
)
from ttsrec.client.model_info import ModelInfo
from ttsrec.client.sharded import ShardedClient, ShardedResult
from ttsrec.client.transport import Transport
from ttsrec.client.utils import PROTOCOLS

__all__ = ["CLIENT_ERRORS", "PROTOCOLS", "Client", "ClientError", "ClientRuntimeError",
           "DeadlineExceededError", "ModelInfo", "Prediction", "RequestRejectedError",
           "ServerUnavailableError", "ShardedClient", "ShardedResult", "ShardsFailedError", "Transport"]
