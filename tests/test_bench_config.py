"""`SweepConfig` rejects what `tts-bench` rejects, with the same one-line message: fast, no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttsrec.bench.config import SweepConfig, configs_for
from ttsrec.bench.measure import MeasureSettings
from ttsrec.bench.sweep import Sweep
from ttsrec.cli.bench import app
from ttsrec.errors import UserError

REJECTED = [
    # (SweepConfig fields, the same through tts-bench, message)
    ({"settings": MeasureSettings(window_ms=5)}, ["-p", "5"], "-p must be >= 10 ms"),
    ({"settings": MeasureSettings(max_trials=2)}, ["--max-trials", "2"], "--max-trials >= 3"),
    ({"settings": MeasureSettings(stability_pct=0)}, ["-s", "0"], "-s > 0"),
    ({"settings": MeasureSettings(warmup_requests=-1)}, ["--warmup-request-count", "-1"], "-p must be"),
    ({"settings": MeasureSettings(percentile=75)}, ["--percentile", "75"], "--percentile must be 50, 90"),
    ({"modes": ["ensemble", "warp"]}, ["--mode", "ensemble,warp"], "unknown mode warp (choose from"),
    ({"modes": []}, ["--mode", ","], "unknown mode (none) (choose from"),
    ({"engine": "turbo"}, ["--engine", "turbo"], "unknown engine 'turbo' (choose from native"),
    ({"protocol": "udp"}, ["-i", "udp"], "unknown protocol 'udp' (choose grpc or http)"),
    ({"modes": ["sharded"]}, ["--mode", "sharded"], "--mode sharded needs --shards-repository"),
    ({"pin_cores": True}, ["--mode", "fused", "--pin-cores"], "--pin-cores needs --mode sharded"),
    (
        {"modes": ["sharded"], "pin_cores": True, "shard_urls": ["127.0.0.1:1"]},
        ["--mode", "sharded", "--pin-cores", "--shard-url", "127.0.0.1:1"],
        "--pin-cores needs --mode sharded",
    ),
]


def _config(**fields: object) -> SweepConfig:
    return SweepConfig(**{"modes": ["fused"], **fields})  # type: ignore[arg-type]


def _cli_error(args: list[str]) -> str:
    """The `UserError` tts-bench raises (run_app prints it as one line and exits 2)."""
    with pytest.raises(UserError) as err:
        app([*args], standalone_mode=False)
    return str(err.value)


@pytest.mark.parametrize("fields, args, message", REJECTED, ids=[r[2][:30] for r in REJECTED])
def test_python_api_rejects_what_the_cli_rejects(fields: dict, args: list[str], message: str) -> None:
    with pytest.raises(UserError) as err:
        Sweep(_config(**fields))
    assert message in str(err.value) and "\n" not in str(err.value)
    assert _cli_error(args) == str(err.value)


def test_python_only_rejections_are_one_line() -> None:
    """Values the CLI's parsers cannot produce (empty or zero lists) fail the same way from Python."""
    for fields, message in (
        ({"batches": [0]}, "batch sizes and concurrencies must be >= 1"),
        ({"concurrencies": [1, -2]}, "batch sizes and concurrencies must be >= 1"),
        ({"batches": []}, "batch sizes and concurrencies: expected at least one value each"),
        ({"m_list": [0, 2]}, "M values must be >= 1"),
        ({"m_list": []}, "M values: expected at least one"),
    ):
        with pytest.raises(UserError) as err:
            _config(**fields)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_one_url_is_one_repository() -> None:
    message = "-u/--url is one server; several --repository values need tts-bench to start them"
    with pytest.raises(UserError, match=message):
        configs_for([Path("a"), Path("b")], SweepConfig(modes=["fused"], url="127.0.0.1:1"))
    assert _cli_error(["-u", "127.0.0.1:1", "--repository", "a,b", "--mode", "fused"]) == message
    one, two = configs_for([Path("a"), Path("b")], SweepConfig(modes=["fused"], batches=[1, 8]))
    assert (one.repository, two.repository, two.batches) == (Path("a"), Path("b"), [1, 8])


def test_valid_config_is_normalised_and_checked_again_by_sweep(tmp_path: Path) -> None:
    cfg = SweepConfig(modes=["fused", "ensemble", "fused"], m_list=[2], shards_repository=tmp_path)
    assert cfg.modes == ["fused", "ensemble"]  # duplicates dropped, order kept
    cfg.engine = "warp"  # a dataclass can be changed after it was built: Sweep checks again
    with pytest.raises(UserError, match="unknown engine 'warp'"):
        Sweep(cfg)
    SweepConfig(modes=["sharded"], shard_urls=["127.0.0.1:1"])
    SweepConfig(modes=["sharded"], shards_repository=tmp_path, pin_cores=True)
    SweepConfig(modes=["fused"], settings=MeasureSettings(window_ms=10, max_trials=3, percentile=99))
