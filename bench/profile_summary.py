"""Summarise a py-spy ``--format raw`` profile: ``python -m bench.profile_summary FILE [TOP]``.

Prints the functions with the most samples on the stack (inclusive) and at the top (self).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path


def summarise(path: Path, top: int = 15) -> str:
    """Inclusive and self sample shares, one line per function."""
    incl: Counter[str] = Counter()
    self_: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")" if " (" in f else f for f in stack.split(";")]
        for f in set(frames):
            incl[f] += n
        self_[frames[-1]] += n
    out = [f"{total} samples", "inclusive:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(top)]
    out += ["self:"] + [f"  {100 * c / total:5.1f}%  {f}" for f, c in self_.most_common(top)]
    return "\n".join(out)


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 15))
