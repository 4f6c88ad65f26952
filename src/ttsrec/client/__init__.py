"""Clients for a served repository: `Client` (one server, one model) and `ShardedClient` (K shard servers)."""

from ttsrec.client.client import Client, Prediction
from ttsrec.client.errors import ClientError
from ttsrec.client.model_info import ModelInfo
from ttsrec.client.sharded import ShardedClient, ShardedResult

__all__ = ["Client", "ClientError", "ModelInfo", "Prediction", "ShardedClient", "ShardedResult"]
