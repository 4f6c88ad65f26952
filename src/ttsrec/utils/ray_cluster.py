"""Ray, the optional extra behind every `--executor ray` (training members, preparing data): one install
hint and one way to join or start a cluster, so both stages fail the same way."""

from __future__ import annotations

from ttsrec.errors import RuntimeFailure, UserError

RAY_HINT = "pip install 'ttsrec[ray]'"


def require_ray() -> None:
    """Without Ray, `--executor ray` is one line (exit 2) naming the install command, checked before
    anything is read or written."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise UserError(f"--executor ray needs Ray, which is not installed here ({RAY_HINT})") from None


def connect(address: str | None, num_cpus: int | None = None) -> bool:
    """Join the cluster at `address` (None: start a local one with `num_cpus`); True when this call
    started Ray, so the caller shuts it down. A cluster that cannot be reached is a `RuntimeFailure`."""
    import ray

    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, num_cpus=num_cpus if address is None else None,
                 include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise RuntimeFailure(f"cannot reach the Ray cluster at {address or 'a new local instance'}: "
                             f"{err}") from err
    return True
