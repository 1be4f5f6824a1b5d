"""The strategies benchmark's cell sets (benchmarks/strategies.py): choices are made on "main"
and "validation" and confirmed on "heldout", which only means something while the sets share no
function, no dimension and, for the validation set, no budget (docs/algorithms.md, "The
validation cells"). Checked without running anything: bbob and Optuna are not needed."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "strategies.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("strategies_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cell_sets_share_no_function_and_no_dimension(bench: ModuleType) -> None:
    sets = bench.CELL_SETS
    assert set(sets) == {"main", "heldout", "validation"}
    names = sorted(sets)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not set(sets[a][0]) & set(sets[b][0]), (a, b)
            assert not set(sets[a][1]) & set(sets[b][1]), (a, b)
    validation_budgets = set(sets["validation"][2])
    assert not validation_budgets & (set(sets["main"][2]) | set(sets["heldout"][2]))
    for functions, _, _ in sets.values():
        assert all(fid in bench.NAMES for fid in functions)


def test_cells_words_name_existing_sets(bench: ModuleType) -> None:
    assert bench.SET_GROUPS["both"] == ("main", "heldout")
    assert set(bench.SET_GROUPS["all"]) == set(bench.CELL_SETS)
    with pytest.raises(SystemExit):
        bench.main(["--cells", "nowhere"])
