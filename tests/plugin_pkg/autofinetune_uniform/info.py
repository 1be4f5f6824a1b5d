"""What autofinetune needs to know before importing the strategy: plain data, no numpy."""
from autofinetune.strategies.registry import StrategyInfo

INFO = StrategyInfo(
    name="uniform",
    target="autofinetune_uniform.strategy:Uniform",
    display_name="Uniform random search",
    min_dim=1,
    supports_async=True,
)
