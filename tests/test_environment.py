"""environment.yml mirrors requirements.txt, so conda and pip users get the same versions."""
from fa_utils.outputs import repo_root


def test_environment_yml_mirrors_requirements():
    root = repo_root()
    reqs = {l.strip() for l in (root / "requirements.txt").read_text().splitlines()
            if l.strip() and not l.startswith("#")}
    env = {l.strip()[2:].strip() for l in (root / "environment.yml").read_text().splitlines()
           if l.strip().startswith("- ") and "==" in l}
    assert reqs == env
