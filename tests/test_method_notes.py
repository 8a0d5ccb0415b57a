"""The repository cites only what it holds: every "docs/method.md section N" and
"docs/choices.md section N" exists, every decision in docs/choices.md is cited from where it
lives, and no file points at method notes outside the repository."""
import os
import re
from pathlib import Path

from fa_utils.outputs import repo_root

ROOT = repo_root()
METHOD = ROOT / "docs" / "method.md"
CHOICES = ROOT / "docs" / "choices.md"
SKIP_DIRS = {".git", ".venv", "runs", "data", "__pycache__", ".pytest_cache", "build",
             ".ipynb_checkpoints", ".whl", ".gl"}
TEXT_SUFFIXES = {".py", ".md", ".ipynb", ".yml", ".yaml", ".toml", ".txt", ".cfg", ".sh",
                 ".json", ".gitattributes", ".gitignore", ""}
# "docs/method.md section 3", "docs/method.md sections 3, 9", "docs/method.md sections 3-4"
# (and the same for docs/choices.md); a citation may break across a docstring's lines
CITATION = r"docs/{}\.md,?\s+sections?\s+(\d+(?:\s*(?:,|-|and)\s*\d+)*)"
# spelled in two parts, so that this file does not cite them itself
OUTSIDE = ("METHOD" + ".md", ".." + "/shared")


def repository_files():
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in filenames:
            path = Path(dirpath) / name
            if path.suffix in TEXT_SUFFIXES or name in ("Makefile", "run"):
                yield path


def cited_sections(text: str, doc: str = "method") -> set[int]:
    """Section numbers of ``docs/<doc>.md`` that ``text`` cites."""
    out = set()
    for m in re.finditer(CITATION.format(doc), text):
        for part in re.split(r"\s*(?:,|and)\s*", m.group(1)):
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    return out


def headings(path: Path) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in
            re.finditer(r"^## (\d+)\. (.+)$", path.read_text(), flags=re.MULTILINE)}


def method_headings() -> dict[int, str]:
    return headings(METHOD)


def citations(doc: str) -> dict[int, list[str]]:
    """section -> the repository files that cite ``docs/<doc>.md section N``."""
    cited: dict[int, list[str]] = {}
    for path in repository_files():
        for n in cited_sections(path.read_text(errors="replace"), doc):
            cited.setdefault(n, []).append(str(path.relative_to(ROOT)))
    return cited


def test_method_notes_have_the_nine_sections():
    heads = method_headings()
    assert sorted(heads) == list(range(1, 10))
    for n, word in {1: "Feature alignment", 2: "toy", 3: "VFA", 4: "VFA-GAN", 5: "Local FA",
                    6: "Appendix A", 7: "Architectures", 8: "Evaluation", 9: "Measured"}.items():
        assert word.lower() in heads[n].lower(), (n, heads[n])


def test_every_cited_method_section_exists():
    heads = method_headings()
    cited = citations("method")
    assert cited, "no file cites docs/method.md"
    missing = {n: files for n, files in cited.items() if n not in heads}
    assert not missing, f"cited sections that docs/method.md lacks: {missing}"
    # the notebooks cite it, in markdown (the only cells they may cite from)
    nb_cited = [p.name for p in (ROOT / "notebooks").glob("*.ipynb")
                if cited_sections(p.read_text())]
    assert len(nb_cited) >= 4, nb_cited


def test_every_cited_choice_exists_and_every_choice_is_cited_from_the_code():
    heads = headings(CHOICES)
    assert sorted(heads) == list(range(1, len(heads) + 1)) and heads, heads
    cited = citations("choices")
    missing = {n: files for n, files in cited.items() if n not in heads}
    assert not missing, f"cited sections that docs/choices.md lacks: {missing}"
    # each decision says where it lives, and that place points back (not counting the
    # document itself, nor this file's examples of the pattern)
    itself = {"docs/choices.md", "tests/test_method_notes.py"}
    from_code = {n for n, files in cited.items() if set(files) - itself}
    uncited = {n: heads[n] for n in heads if n not in from_code}
    assert not uncited, f"docs/choices.md sections no file cites: {uncited}"


def test_the_citation_pattern_reads_ranges_and_lists():
    assert cited_sections("(docs/method.md sections 3, 9; x)") == {3, 9}
    assert cited_sections("docs/method.md sections 3-4 and docs/method.md section 1") == {1, 3, 4}
    assert cited_sections("docs/method.md") == set()
    assert cited_sections("(docs/choices.md\n    section 10)", "choices") == {10}
    assert cited_sections("docs/choices.md section 2", "method") == set()


def test_no_file_cites_notes_outside_the_repository():
    offenders = []
    for path in repository_files():
        rel = path.relative_to(ROOT)
        text = path.read_text(errors="replace")
        offenders += [f"{rel}: {s}" for s in OUTSIDE if s in text]
    assert not offenders, offenders
