"""The documentation a user reads: no pointers to notes they cannot see, no placeholders, one repository name,
every public name in the API reference, and README's example distances as the example prints them."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

import mmnet
from mmnet.defaults import DEFAULT_WEIGHTS

REPO = Path(__file__).resolve().parents[1]
USER_DOCS = [
    REPO / "README.md",
    REPO / "examples" / "README.md",
    REPO / "hubconf.py",
    *sorted((REPO / "docs").rglob("*.md")),
]


def test_docs_send_nobody_to_notes_they_cannot_see():
    banned = ["mmnet-reference", "backbone-weights", "MMNET_DOCS", "shared notes", "shared/docs", "ecosystem-notes"]
    for path in USER_DOCS:
        text = path.read_text()
        for word in banned:
            assert word not in text, f"{path.relative_to(REPO)} mentions {word!r}"


def test_no_stale_placeholders():
    for path in USER_DOCS:
        text = path.read_text()
        for phrase in ("to be added", "<owner>", "TODO", "TBD"):
            assert phrase not in text, f"{path.relative_to(REPO)} still says {phrase!r}"


def test_one_repository_name_everywhere():
    urls = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]
    repo = re.match(r"https://github\.com/([^/]+/[^/]+)", urls["Repository"]).group(1)
    assert all(u.startswith(f"https://github.com/{repo}") for u in urls.values())
    texts = [p.read_text() for p in USER_DOCS] + [(REPO / "mkdocs.yml").read_text()]
    named = {m for t in texts for m in re.findall(r"github\.com/([\w.-]+/mmnet)\b", t)}
    named |= {m for t in texts for m in re.findall(r"torch\.hub\.load\(\"([\w.-]+/mmnet)\"", t)}
    assert named == {repo}, named


def test_every_public_name_is_in_the_api_reference():
    documented = set()
    for page in (REPO / "docs" / "api").glob("*.md"):
        documented |= set(re.findall(r"^::: mmnet\.(\w+)$", page.read_text(), flags=re.M))
    missing = set(mmnet.__all__) - documented - {"__version__"}
    assert not missing, f"public names without an API reference entry: {sorted(missing)}"
    for name in mmnet.__all__:
        if name != "__version__":
            assert getattr(mmnet, name).__doc__, f"mmnet.{name} has no docstring"


def test_every_docs_page_is_in_the_site_navigation():
    nav = (REPO / "mkdocs.yml").read_text()
    for page in (REPO / "docs").rglob("*.md"):
        assert str(page.relative_to(REPO / "docs")) in nav, f"{page} is not in mkdocs.yml's nav"


def test_readme_match_output_and_distances_are_what_the_example_prints():
    readme = (REPO / "README.md").read_text()
    matcher = mmnet.Matcher.from_pretrained(DEFAULT_WEIGHTS, device="cpu")  # what `mmnet match` uses
    source = REPO / "examples" / "astronaut.jpg"
    points = [[91, 98], [136, 98], [114, 120], [114, 137]]
    result = matcher.match(source, REPO / "examples" / "grace_hopper.jpg", points)
    for i, (p, t, s) in enumerate(zip(points, result.keypoints.tolist(), result.scores.tolist(), strict=True), 1):
        t, s = [round(v, 2) for v in t], round(s, 4)  # as `mmnet match` rounds before printing
        line = f"{i:>2}  ({p[0]:7.1f}, {p[1]:7.1f}) -> ({t[0]:7.1f}, {t[1]:7.1f})  score {s:.3f}"
        assert line in readme, line
    truth = {0: (87, 91), 1: (128, 91), 3: (107, 141)}  # examples/keypoints.json, grace_hopper.jpg
    distances = [
        ((result.keypoints[i, 0] - x) ** 2 + (result.keypoints[i, 1] - y) ** 2).sqrt().item()
        for i, (x, y) in truth.items()
    ]
    assert (
        f"the eyes land\n{distances[0]:.1f} and {distances[1]:.1f} pixels away, the mouth {distances[2]:.1f}" in readme
    )
