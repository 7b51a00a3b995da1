"""The README's quick start stays true: its second command is what CI runs."""

from conftest import REPO


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text().split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert len(readme) == 2
    assert "experiments/quickstart.yaml" in readme[0]
    assert readme[1] in (REPO / ".ci" / "run").read_text().splitlines()
