"""The code a notebook keeps for itself (d2l: code lives where it is explained), run by
the tests: one cell, named by its id, executed in a fresh namespace."""
from pathlib import Path
from types import SimpleNamespace

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def cell_namespace(stem: str, cell_id: str) -> SimpleNamespace:
    """What cell ``cell_id`` of ``notebooks/<stem>.ipynb`` defines.

    Raises:
        KeyError: the notebook has no such cell (the message lists its code cells' ids).
    """
    nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    cells = {c.get("id"): c for c in nb.cells if c.cell_type == "code"}
    if cell_id not in cells:
        raise KeyError(f"{stem}.ipynb has no code cell {cell_id!r}; its code cells are {list(cells)}")
    namespace: dict = {}
    exec(compile(cells[cell_id].source, f"{stem}.ipynb#{cell_id}", "exec"), namespace)
    return SimpleNamespace(**namespace)


#: Notebook 01's cell with Section 3.2's code (the networks, their inversion, the claims).
def toy():
    return cell_namespace("01_toy_sin", "0cc24fb5")
