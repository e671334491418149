"""Keep the line counts in docs/READING.md true.

    python tools/reading_lengths.py           rewrite the counts (and totals) in place
    python tools/reading_lengths.py --check   only compare; exit 1 if a count is stale or a
                                              module of the package is missing from the guide

A counted row is a markdown table row whose second cell links a file and whose third cell is its
number of lines, as `wc -l` counts them: `| 3 | [tinygrok/model.py](../tinygrok/model.py) | 283 |`.
A row whose second cell is `**total**` holds the sum of the counted rows above it in its table.
tests/test_examples.py runs the check.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "READING.md"
FILE_ROW = re.compile(r"^(\|[^|]*\| *\[`?(?P<path>[^\]`]+)`?\]\([^)]*\) *\| *)(?P<n>\d+)( *\|.*)$")
TOTAL_ROW = re.compile(r"^(\|[^|]*\| *\*\*total\*\* *\| *)(?P<n>\d+)( *\|.*)$")


def wc_l(path: Path) -> int:
    """Newline characters in the file, as `wc -l` counts lines."""
    return path.read_bytes().count(b"\n")


def updated(text: str, root: Path = ROOT) -> str:
    """The guide with every counted row and total set from the files under `root`."""
    lines, running = [], 0
    for line in text.split("\n"):
        if m := FILE_ROW.match(line):
            n = wc_l(root / m["path"])
            running += n
            line = f"{m[1]}{n}{m[4]}"
        elif m := TOTAL_ROW.match(line):
            line = f"{m[1]}{running}{m[3]}"
        if not line.startswith("|"):
            running = 0  # a table ended
        lines.append(line)
    return "\n".join(lines)


def listed(text: str) -> set[str]:
    """The paths of the counted rows."""
    return {m["path"] for line in text.split("\n") if (m := FILE_ROW.match(line))}


def missing_modules(text: str, root: Path = ROOT) -> list[str]:
    """Modules of the package that the guide does not list."""
    modules = {p.relative_to(root).as_posix() for p in (root / "tinygrok").rglob("*.py")}
    return sorted(modules - listed(text))


def main() -> None:
    text = GUIDE.read_text()
    new, missing = updated(text), missing_modules(text)
    if "--check" not in sys.argv[1:]:
        GUIDE.write_text(new)
        print(f"{GUIDE.relative_to(ROOT)}: counts updated")
    stale = [
        f"  {a.split('|')[2].strip()}: says {a.split('|')[3].strip()}, is {b.split('|')[3].strip()}"
        for a, b in zip(text.split("\n"), new.split("\n"), strict=True)
        if a != b
    ]
    if "--check" in sys.argv[1:] and stale:
        print("docs/READING.md has stale line counts (run python tools/reading_lengths.py):")
        print("\n".join(stale))
    if missing:
        print("docs/READING.md does not list: " + ", ".join(missing))
    sys.exit(1 if missing or ("--check" in sys.argv[1:] and stale) else 0)


if __name__ == "__main__":
    main()
