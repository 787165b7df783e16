"""The README fits on a page and the docs hold together: every relative link resolves, every page is reachable.

Pure file reads: no network, no kdsweep import.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
README_MAX_LINES = 200

FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
# [text](target) and ![alt](target), with an optional "title"; text may hold no brackets.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`[^`]*`")


def prose_lines(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks (a `# comment` in a bash block is not a heading)."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation other than - and _ dropped, spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor, with GitHub's -1, -2, ... suffixes for repeated headings."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(path):
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    links = []
    for line in prose_lines(path):
        links += LINK.findall(INLINE_CODE.sub("", line))
    return [link for link in links if not re.match(r"^[a-z][a-z0-9+.-]*:", link)]  # http:, mailto:, ...


def resolve(path: Path, link: str) -> tuple[Path, str]:
    target, _, anchor = link.partition("#")
    return ((path.parent / target).resolve() if target else path), anchor


def test_readme_fits_on_a_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def test_readme_starts_with_the_two_commands_for_a_fresh_machine():
    first, second = README.read_text().splitlines()[:2]
    assert re.fullmatch(
        r"python3 -m venv \.venv && \.venv/bin/pip install .+ -e \. && \.venv/bin/python -m kdsweep\.search", first
    )
    assert second == "bash .ci/run"
    assert (ROOT / ".ci" / "run").is_file()


def test_the_slug_follows_githubs_rules():
    assert github_slug("5. The head's disk, and `mlflow.db`") == "5-the-heads-disk-and-mlflowdb"
    assert github_slug("Does distillation pay? Scratch baselines, `kd_gain` and `gap_closed`") == (
        "does-distillation-pay-scratch-baselines-kd_gain-and-gap_closed"
    )


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_point_at_files_and_headings_that_exist(path):
    broken = []
    for link in relative_links(path):
        target, anchor = resolve(path, link)
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no heading '#{anchor}' in {target.relative_to(ROOT)}")
    assert not broken, f"{path.relative_to(ROOT)}: " + "; ".join(broken)


def test_every_docs_page_is_linked_from_the_readme():
    linked = {resolve(README, link)[0] for link in relative_links(README)}
    unlinked = [str(page.relative_to(ROOT)) for page in DOCS if page.resolve() not in linked]
    assert not unlinked, f"README.md does not link {', '.join(unlinked)}"
