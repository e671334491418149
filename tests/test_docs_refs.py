"""The docs, docstrings, comments, examples and `--help` texts cite only what a reader can open:
files of this repository and public sources by their titles, never a file that is not in the
repository or an internal issue number."""

from __future__ import annotations

import re
from pathlib import Path

import click

from tinygrok.cli import cli

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve()

# Built from pieces, so that this file does not match its own patterns.
OUTSIDE = re.compile(
    "|".join(
        [
            r"\b" + "DESIGN" + r"\.md\b",
            r"\b" + "STYLE" + r"\.md\b",
            r"\bseeds" + "/",
            r"\bseed " + "00" + r"\d",
            r"\bissue " + r"\d+",
        ]
    ),
    re.IGNORECASE,
)


def sources() -> list[Path]:
    """README.md, docs/*.md and every .py file in tinygrok/, examples/, benchmarks/ and tests/."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for folder in ("tinygrok", "examples", "benchmarks", "tests"):
        files += sorted((ROOT / folder).rglob("*.py"))
    return [f for f in files if f.resolve() != HERE]


def help_texts() -> dict[str, str]:
    """`tinygrok --help` and the `--help` of every command, as click renders them."""
    texts = {"tinygrok --help": cli.get_help(click.Context(cli, info_name="tinygrok"))}
    for name, cmd in sorted(cli.commands.items()):
        texts[f"tinygrok {name} --help"] = cmd.get_help(click.Context(cmd, info_name=name))
    return texts


def matches(text: str, where: str) -> list[str]:
    """'where:line: text' for every line of `text` that cites something outside the repository."""
    return [
        f"{where}:{n}: {line.strip()}"
        for n, line in enumerate(text.splitlines(), 1)
        if OUTSIDE.search(line)
    ]


def test_the_pattern_finds_what_it_forbids():
    for cited in ("see DESIGN" + ".md", "as in seed " + "003", "Seed " + "000's", "(issue " + "3)"):
        assert OUTSIDE.search(cited), cited
    for fine in ("README.md", "--seeds 0-2", "seed 0's delay", "the report's measure"):
        assert not OUTSIDE.search(fine), fine


def test_the_walk_covers_the_docs_and_the_code():
    names = {f.relative_to(ROOT).as_posix() for f in sources()}
    assert {"README.md", "docs/RESULTS.md", "tinygrok/cli/options.py", "tests/test_cli.py"} <= names
    assert any(n.startswith("examples/") for n in names)
    assert any(n.startswith("benchmarks/") for n in names)
    assert HERE.relative_to(ROOT).as_posix() not in names


def test_files_cite_nothing_outside_the_repository():
    found = []
    for path in sources():
        found += matches(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    assert not found, "references outside the repository:\n" + "\n".join(found)


def test_help_texts_cite_nothing_outside_the_repository():
    texts = help_texts()
    assert len(texts) == len(cli.commands) + 1
    found = [hit for where, text in texts.items() for hit in matches(text, where)]
    assert not found, "references outside the repository:\n" + "\n".join(found)
