"""``vecflow bench profile``: where the time goes, from a ``py-spy record -f raw`` file."""

from __future__ import annotations

from pathlib import Path


def profile_summary(raw_path: Path, within: str | None = None, top: int = 12) -> dict:
    """Where the time goes, from a ``py-spy record -f raw`` file: the share of samples per deepest vecflow frame
    and per leaf frame, counting only stacks that pass through ``within`` (e.g. ``embed_chunks``)."""
    from collections import Counter

    deepest, leaf, total = Counter(), Counter(), 0
    for line in Path(raw_path).read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or (within and not any(within in f for f in frames)):
            continue
        total += int(count)
        ours = [f for f in frames if "vecflow/" in f]
        deepest[ours[-1] if ours else "(outside vecflow)"] += int(count)
        leaf[frames[-1]] += int(count)
    share = lambda counter: [(name, round(n / max(total, 1), 3)) for name, n in counter.most_common(top)]  # noqa: E731
    return {"samples": total, "within": within, "deepest_vecflow_frame": share(deepest), "leaf_frame": share(leaf)}
