"""Keep the line counts in docs/READING.md true.

    python tools/reading_lengths.py           rewrite the counts (and totals) in place
    python tools/reading_lengths.py --check   only compare; exit 1 if a count is stale or a
                                              module of the package is missing from the guide

A counted row is a markdown table row whose second cell links a file (relative to docs/) and whose
third cell is its number of lines, as `wc -l` counts them:
`| 3 | [tinygrok/model.py](../tinygrok/model.py) | 283 | ... |`.
A row whose second cell is `**total**` holds the sum of the counted rows above it in its table.
tests/test_examples.py runs the check.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "READING.md"
FILE_ROW = re.compile(r"^(\|[^|]*\| *\[[^\]]*\]\((?P<link>[^)]+)\) *\| *)(?P<n>\d+)( *\|.*)$")
TOTAL_ROW = re.compile(r"^(\|[^|]*\| *\*\*total\*\* *\| *)(?P<n>\d+)( *\|.*)$")


def wc_l(path: Path) -> int:
    """Newline characters in the file, as `wc -l` counts lines."""
    return path.read_bytes().count(b"\n")


def target(link: str) -> Path:
    """The file a link in the guide points to."""
    return (GUIDE.parent / link).resolve()


def updated(text: str) -> str:
    """The guide with every counted row and total set from the files it links."""
    lines, running = [], 0
    for line in text.split("\n"):
        if m := FILE_ROW.match(line):
            n = wc_l(target(m["link"]))
            running += n
            line = f"{m[1]}{n}{m[4]}"
        elif m := TOTAL_ROW.match(line):
            line = f"{m[1]}{running}{m[3]}"
        if not line.startswith("|"):
            running = 0  # a table ended
        lines.append(line)
    return "\n".join(lines)


def listed(text: str) -> set[Path]:
    """The files of the counted rows."""
    return {target(m["link"]) for line in text.split("\n") if (m := FILE_ROW.match(line))}


def unlisted_modules(text: str) -> list[str]:
    """Modules of the package that the guide does not list."""
    modules = set((ROOT / "tinygrok").rglob("*.py")) - listed(text)
    return sorted(p.relative_to(ROOT).as_posix() for p in modules)


def main() -> None:
    check = "--check" in sys.argv[1:]
    text = GUIDE.read_text()
    gone = sorted(str(p) for p in listed(text) if not p.is_file())
    if gone:
        sys.exit(f"docs/READING.md links files that do not exist: {', '.join(gone)}")
    new, unlisted = updated(text), unlisted_modules(text)
    if not check:
        GUIDE.write_text(new)
        print("docs/READING.md: line counts updated")
    stale = [
        (a.split("|"), b.split("|"))
        for a, b in zip(text.split("\n"), new.split("\n"), strict=True)
        if a != b
    ]
    if check and stale:
        print("docs/READING.md has stale line counts; run python tools/reading_lengths.py")
        for a, b in stale:
            print(f"  {a[2].strip()}: says {a[3].strip()}, is {b[3].strip()}")
    if unlisted:
        print(f"docs/READING.md does not list: {', '.join(unlisted)}")
    sys.exit(1 if unlisted or (check and stale) else 0)


if __name__ == "__main__":
    main()
