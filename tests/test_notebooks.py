"""Notebook hygiene: thin, parameterised, stripped, portable."""
import re

import nbformat
import pytest

from fa_utils import runner

NOTEBOOKS = runner.all_notebooks()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_hygiene(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [] and cell.execution_count is None, "outputs must be stripped"
        code = "\n".join(line.split("#")[0] for line in cell.source.splitlines())
        assert "!pip" not in code and "%pip" not in code
        assert "sys.path" not in code
        assert not re.search(r"\.cuda\(|['\"]cuda(:\d)?['\"]", code), "no hard-coded cuda"
        assert len(cell.source.splitlines()) <= 40, "long code belongs in fa_utils"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_reads_every_parameter(path):
    """papermill's own parser (``papermill --help-notebook``) sees each parameter: a line it
    cannot parse (e.g. a second '=' in the comment) is silently dropped from its help."""
    import papermill as pm
    assert set(pm.inspect_notebook(str(path))) == set(runner.notebook_parameters(path))
