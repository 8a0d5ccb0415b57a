"""The code a notebook keeps for itself (d2l: code lives where it is explained), run by
the tests: its cells, named by their ids, executed in a fresh namespace."""
from pathlib import Path
from types import SimpleNamespace

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def cell_namespace(stem: str, *cell_ids: str) -> SimpleNamespace:
    """What the cells ``cell_ids`` of ``notebooks/<stem>.ipynb`` define, run in that order
    in one namespace.

    Raises:
        KeyError: the notebook has no such cell (the message lists its code cells' ids).
    """
    nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    cells = {c.get("id"): c for c in nb.cells if c.cell_type == "code"}
    namespace: dict = {"__name__": f"notebook_{stem}"}
    for cell_id in cell_ids:
        if cell_id not in cells:
            raise KeyError(f"{stem}.ipynb has no code cell {cell_id!r}; its code cells are "
                           f"{list(cells)}")
        exec(compile(cells[cell_id].source, f"{stem}.ipynb#{cell_id}", "exec"), namespace)
    return SimpleNamespace(**namespace)


def toy() -> SimpleNamespace:
    """Notebook 01's cells with Section 3.2's code (the networks, their inversion, the claims)."""
    return cell_namespace("01_toy_sin", "0cc24fb5", "178627c3", "a2e2a854", "ca60a884", "8185d177")


def appendix() -> SimpleNamespace:
    """Notebook 06's Appendix A code (7.1, 7.2, the Eq. 9 clamp, the claims)."""
    return cell_namespace("06_appendix_convergence", "3c640000", "a71-code", "a72-distances",
                          "a72-train", "eq9-code", "claims-a71", "claims-a72", "claims-builder")


def local_fa() -> SimpleNamespace:
    """Notebook 05's code: layer errors, the memory measure and table's rows, Section 3.5's
    claims."""
    return cell_namespace("05_local_fa", "5e4c9e0a", "local-layer-errors", "local-memory-measure",
                          "local-memory-step", "local-memory-compare", "local-memory-rows",
                          "local-claims")


def fa_claims():
    """Notebook 02's claim builder (Section 3.1 / Figure 1, Section 5 / Figure 6a)."""
    return cell_namespace("02_fa_mnist", "5c1e7a20").fa_claims


def vfa_claims():
    """Notebook 03's claim builder (Section 3.3 / Figure 3, Section 3.4 / Figure 8)."""
    return cell_namespace("03_vfa", "3d8b6f41").vfa_claims


def comparison() -> SimpleNamespace:
    """Notebook 04's cells with the samples' quality, KID's orderings and Section 5's claims."""
    return cell_namespace("04_vfa_gan", "e4c7a912", "table2-fid", "d2f8a6b3", "a6c3f1e8",
                          "f7d2b8a5", "e2b9c4d7")
