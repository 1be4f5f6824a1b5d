"""The Python API: the same search as the CLI, for notebooks and other tools.

`tune()`'s options are those of the CLI, by the names of the one option table (options.py),
so the two cannot drift apart; its docstring lists them from that table.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple, Union

from . import options as option_table
from .devices import build_slots
from .errors import ConfigError, path_error
from .search import Search, SearchConfig, SearchObserver, SearchResult, default_output_dir
from .space import SearchSpace, load_space


def tune(
    script: Union[str, "os.PathLike[str]"],
    params: Union[str, "os.PathLike[str]", SearchSpace, Sequence[Mapping[str, Any]]],
    *,
    passthrough: Optional[Union[Mapping[str, Any], Sequence[Tuple[str, Any]]]] = None,
    echo: Optional[Callable[[str], None]] = print,
    observers: Sequence[SearchObserver] = (),
    visualdl: bool = True,
    progress: bool = False,
    **options: Any,
) -> SearchResult:
    """Tune `script` over `params` (an hparam.yaml path, a SearchSpace or a param_list).

    `passthrough` holds the CLI's trailing `name value` pairs. `echo=None` keeps the search
    silent (its lines and its crash warnings; library warnings still go to the `autofinetune`
    logger); `observers` are extra views (see `SearchObserver`); `visualdl` writes the VisualDL
    logs under `<output_dir>/visualization`; `progress` shows a live progress line. Without a
    seed, one is drawn and kept in the result and the journal, so any search can be repeated.

    Options (keyword arguments, as in the CLI; see docs/architecture.md):
    """
    values = option_table.validate(options)
    if values["resume"] and values["output_dir"] is None:
        raise ConfigError("--resume needs --output_dir: the folder of the search to continue")
    space = load_space(params)
    pairs = list(passthrough.items()) if isinstance(passthrough, Mapping) else list(passthrough or [])
    try:
        script_path = Path(script).resolve()
    except (OSError, RuntimeError) as error:
        raise path_error("the training script", script, error, "pass the path of your train.py as the first argument") from None
    config = SearchConfig(
        script=script_path,
        space=space,
        output_dir=Path(values["output_dir"]) if values["output_dir"] is not None else default_output_dir(),
        slots=build_slots(values["gpu"], values["workers"]),
        options=values,
        passthrough=[(str(k), str(v)) for k, v in pairs],
    )
    views: List[SearchObserver] = []
    if visualdl:
        from .views.visualdl import VisualDLView

        if not any(isinstance(o, VisualDLView) for o in observers):  # one writer per folder
            views.append(VisualDLView())
    if progress:
        from .views.progress import ProgressView

        views.append(ProgressView())
    warn = (lambda line: print(line, file=sys.stderr, flush=True)) if echo is not None else None
    return Search(config, echo=echo, observers=[*views, *observers], resume=values["resume"], warn=warn).run()


tune.__doc__ = (tune.__doc__ or "") + "\n" + option_table.api_doc() + "\n"
