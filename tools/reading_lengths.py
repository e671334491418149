"""Keep the line counts in docs/READING.md and in README.md's "Reading the source" true.

    python tools/reading_lengths.py           rewrite the counts (and totals) in place
    python tools/reading_lengths.py --check   only compare; exit 1 if a count is stale or a
                                              module of the package is missing from the guide

A counted row is a markdown table row whose second cell links a file (relative to the document) and
whose third cell is its number of lines, as `wc -l` counts them:
`| 3 | [tinygrok/model.py](../tinygrok/model.py) | 283 | ... |`.
A row whose second cell is `**total**` holds the sum of the counted rows above it in its table.
tests/test_examples.py runs the check.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "READING.md"  # the full guide: it must list every module
DOCS = (GUIDE, ROOT / "README.md")
FILE_ROW = re.compile(r"^(\|[^|]*\| *\[[^\]]*\]\((?P<link>[^)]+)\) *\| *)(?P<n>\d+)( *\|.*)$")
TOTAL_ROW = re.compile(r"^(\|[^|]*\| *\*\*total\*\* *\| *)(?P<n>\d+)( *\|.*)$")


def wc_l(path: Path) -> int:
    """Newline characters in the file, as `wc -l` counts lines."""
    return path.read_bytes().count(b"\n")


def target(link: str, doc: Path = GUIDE) -> Path:
    """The file a link in the document `doc` points to."""
    return (doc.parent / link).resolve()


def updated(text: str, doc: Path = GUIDE) -> str:
    """The document with every counted row and total set from the files it links."""
    lines, running = [], 0
    for line in text.split("\n"):
        if m := FILE_ROW.match(line):
            n = wc_l(target(m["link"], doc))
            running += n
            line = f"{m[1]}{n}{m[4]}"
        elif m := TOTAL_ROW.match(line):
            line = f"{m[1]}{running}{m[3]}"
        if not line.startswith("|"):
            running = 0  # a table ended
        lines.append(line)
    return "\n".join(lines)


def listed(text: str, doc: Path = GUIDE) -> set[Path]:
    """The files of the counted rows."""
    return {target(m["link"], doc) for line in text.split("\n") if (m := FILE_ROW.match(line))}


def unlisted_modules(text: str) -> list[str]:
    """Modules of the package that the guide does not list."""
    modules = set((ROOT / "tinygrok").rglob("*.py")) - listed(text)
    return sorted(p.relative_to(ROOT).as_posix() for p in modules)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 if a count is stale")
    check = ap.parse_args().check
    failed = False
    for doc in DOCS:
        name = doc.relative_to(ROOT).as_posix()
        text = doc.read_text()
        gone = sorted(str(p) for p in listed(text, doc) if not p.is_file())
        if gone:
            sys.exit(f"{name} links files that do not exist: {', '.join(gone)}")
        new = updated(text, doc)
        if not check:
            doc.write_text(new)
            print(f"{name}: line counts updated")
        stale = [
            (a.split("|"), b.split("|"))
            for a, b in zip(text.split("\n"), new.split("\n"), strict=True)
            if a != b
        ]
        if check and stale:
            failed = True
            print(f"{name} has stale line counts; run python tools/reading_lengths.py")
            for a, b in stale:
                print(f"  {a[2].strip()}: says {a[3].strip()}, is {b[3].strip()}")
    unlisted = unlisted_modules(GUIDE.read_text())
    if unlisted:
        print(f"docs/READING.md does not list: {', '.join(unlisted)}")
    sys.exit(1 if unlisted or failed else 0)


if __name__ == "__main__":
    main()
