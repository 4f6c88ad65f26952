"""Serving: the bundled tritonserver on loopback (`TritonServer`), and K of them for a sharded export."""

from ttsrec.serve.bundle import Bundle, find_bundle
from ttsrec.serve.repo_check import check_repository, docker_command
from ttsrec.serve.server import TritonServer
from ttsrec.serve.sharded import ShardedServers, find_shards

__all__ = ["Bundle", "ShardedServers", "TritonServer", "check_repository", "docker_command", "find_bundle",
           "find_shards"]
