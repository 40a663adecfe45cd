"""The documentation's links stay inside the repository and resolve.

Every Markdown link and image in README.md, docs/*.md and roles/*/README.md: no URL and no
absolute path (nothing links outside the repository), a relative target that exists inside
the repository, and an anchor (`file.md#heading`, `#heading`) that names a heading of its
file, as GitHub spells heading anchors. Code blocks and code spans are not links.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "roles").glob("*/README.md")]
)
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def prose_lines(path: Path, code_spans: bool = False) -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks, code spans removed unless
    asked for (a heading's anchor keeps their text)."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line if code_spans else CODE_SPAN.sub("", line)))
    return lines


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in prose_lines(path):
        found += [(number, target) for target in INLINE_LINK.findall(line)]
        reference = REFERENCE.match(line)
        if reference:
            found.append((number, reference.group(1)))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"[^\w\- ]", "", text.replace("`", "").lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    for _, line in prose_lines(path.resolve(), code_spans=True):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
    return {base if n == 0 else f"{base}-{n}" for base, total in seen.items() for n in range(total)}


def test_the_documents_are_found():
    names = {path.relative_to(ROOT).as_posix() for path in DOCUMENTS}
    assert {"README.md", "docs/figures.md", "roles/inference_service/README.md"} <= names


def test_slugs_follow_github():
    assert slug("linkedge.edge.release_verify") == "linkedgeedgerelease_verify"
    assert slug("Fuzzing (`tests/fuzz`)") == "fuzzing-testsfuzz"
    assert slug("Supported ansible-core versions") == "supported-ansible-core-versions"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_resolve_inside_the_repository(document: Path):
    problems = []
    for number, target in links(document):
        where = f"{document.relative_to(ROOT)}:{number}: {target!r}"
        if not target:
            problems.append(f"{where}: empty link")
            continue
        if SCHEME.match(target) or target.startswith("//"):
            problems.append(f"{where}: links outside the repository")
            continue
        path_part, _, anchor = target.partition("#")
        if path_part.startswith("/"):
            problems.append(f"{where}: absolute path")
            continue
        resolved = Path(os.path.normpath(document.parent / path_part)) if path_part else document
        if resolved != ROOT and ROOT not in resolved.parents:
            problems.append(f"{where}: points outside the repository")
            continue
        if not resolved.exists():
            problems.append(f"{where}: {resolved.relative_to(ROOT)} does not exist")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_path_outside_the_repository_is_named(document: Path):
    text = document.read_text(encoding="utf-8")
    assert "../shared" not in text, f"{document.relative_to(ROOT)} names ../shared"
    assert str(ROOT) not in text, f"{document.relative_to(ROOT)} names this machine's {ROOT}"
