"""Strategies that adapt other libraries to autofinetune's Strategy contract (docs/optuna.md).

They register like any third-party plugin, through the ``autofinetune.strategies`` entry-point
group in autofinetune's own pyproject.toml, so they are listed apart from the built-ins
(``builtin=False``) and their libraries are optional extras (``autofinetune[optuna]``). Nothing
here is imported by ``import autofinetune``.
"""
