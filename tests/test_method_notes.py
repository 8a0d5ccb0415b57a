"""The repository cites only what it holds: every "docs/method.md section N" exists, and no
file points at method notes outside the repository."""
import os
import re
from pathlib import Path

from fa_utils.outputs import repo_root

ROOT = repo_root()
METHOD = ROOT / "docs" / "method.md"
SKIP_DIRS = {".git", ".venv", "runs", "data", "__pycache__", ".pytest_cache", "build",
             ".ipynb_checkpoints", ".whl", ".gl"}
TEXT_SUFFIXES = {".py", ".md", ".ipynb", ".yml", ".yaml", ".toml", ".txt", ".cfg", ".sh",
                 ".json", ".gitattributes", ".gitignore", ""}
# "docs/method.md section 3", "docs/method.md sections 3, 9", "docs/method.md sections 3-4"
CITATION = re.compile(r"docs/method\.md,?\s+sections?\s+(\d+(?:\s*(?:,|-|and)\s*\d+)*)")
# spelled in two parts, so that this file does not cite them itself
OUTSIDE = ("METHOD" + ".md", ".." + "/shared")


def repository_files():
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in filenames:
            path = Path(dirpath) / name
            if path.suffix in TEXT_SUFFIXES or name in ("Makefile", "run"):
                yield path


def cited_sections(text: str) -> set[int]:
    out = set()
    for m in CITATION.finditer(text):
        for part in re.split(r"\s*(?:,|and)\s*", m.group(1)):
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    return out


def method_headings() -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in
            re.finditer(r"^## (\d+)\. (.+)$", METHOD.read_text(), flags=re.MULTILINE)}


def test_method_notes_have_the_nine_sections():
    heads = method_headings()
    assert sorted(heads) == list(range(1, 10))
    for n, word in {1: "Feature alignment", 2: "toy", 3: "VFA", 4: "VFA-GAN", 5: "Local FA",
                    6: "Appendix A", 7: "Architectures", 8: "Evaluation", 9: "Measured"}.items():
        assert word.lower() in heads[n].lower(), (n, heads[n])


def test_every_cited_method_section_exists():
    heads = method_headings()
    cited = {}
    for path in repository_files():
        for n in cited_sections(path.read_text(errors="replace")):
            cited.setdefault(n, []).append(str(path.relative_to(ROOT)))
    assert cited, "no file cites docs/method.md"
    missing = {n: files for n, files in cited.items() if n not in heads}
    assert not missing, f"cited sections that docs/method.md lacks: {missing}"
    # the notebooks cite it, in markdown (the only cells they may cite from)
    nb_cited = [p.name for p in (ROOT / "notebooks").glob("*.ipynb")
                if cited_sections(p.read_text())]
    assert len(nb_cited) >= 4, nb_cited


def test_the_citation_pattern_reads_ranges_and_lists():
    assert cited_sections("(docs/method.md sections 3, 9; x)") == {3, 9}
    assert cited_sections("docs/method.md sections 3-4 and docs/method.md section 1") == {1, 3, 4}
    assert cited_sections("docs/method.md") == set()


def test_no_file_cites_notes_outside_the_repository():
    offenders = []
    for path in repository_files():
        rel = path.relative_to(ROOT)
        text = path.read_text(errors="replace")
        offenders += [f"{rel}: {s}" for s in OUTSIDE if s in text]
    assert not offenders, offenders
