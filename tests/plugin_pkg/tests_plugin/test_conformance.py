"""The plugin passes autofinetune's strategy contract, exactly as the built-ins do."""
import pytest

# Collected by the repository's own test run too, where the plugin is not installed;
# tests/test_plugin.py installs it and runs this module, and there it must not skip.
pytest.importorskip("autofinetune_uniform", reason="the plugin is not installed (tests/test_plugin.py installs it)")

from autofinetune.testing.strategies import StrategyTestCase  # noqa: E402


class TestUniform(StrategyTestCase):
    strategy_name = "uniform"
    check_beats_random = False  # it is random search
