"""Delete old generations from disk, only when asked (`tts-deploy rollout --prune`): the live generation
and the newest `keep` generations stay, and a version folder another kept generation uses stays too."""

from __future__ import annotations

from pathlib import Path

from ttsrec.deploy import state
from ttsrec.repository import generations as gens
from ttsrec.utils.atomic import output_lock


def prune_generations(repo: Path, keep: int = 2) -> list[str]:
    """Remove generations beyond the newest `keep` (never the live one); returns one line per root."""
    repo = Path(repo).absolute()
    lines = []
    with output_lock(repo):
        for root in state.roots(repo):
            manifest = state.load(root)
            records = manifest.get(gens.GENERATIONS, [])
            newest = sorted((r["generation"] for r in records), reverse=True)[:keep]
            live = manifest.get(gens.LIVE)
            kept = [r for r in records if r["generation"] in newest or r["generation"] == live]
            if len(kept) == len(records):
                continue
            dropped = sorted(r["generation"] for r in records if r not in kept)
            state.save(root, {**manifest, gens.GENERATIONS: kept})  # first: then the folders are leftovers
            removed = state.clean_leftovers(root, state.load(root))
            state.save(root, state.load(root))
            names = ", ".join(map(str, dropped))
            lines.append(f"{root}: pruned generation(s) {names} ({len(removed)} folders)")
    return lines
