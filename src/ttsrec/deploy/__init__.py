"""Generations of a served repository: add one (`add`), roll servers to it and back (`rollout`), prune
old ones (`prune`); `tts-deploy` is the CLI."""
