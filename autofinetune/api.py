"""The Python API: the same search as the CLI, for notebooks and other tools (SPEC B8)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Sequence, Union

from .devices import build_slots
from .errors import ConfigError
from .search import Search, SearchConfig, SearchObserver, SearchResult, default_output_dir
from .space import SearchSpace, load_space


def tune(
    script: Union[str, "os.PathLike[str]"],
    params: Union[str, "os.PathLike[str]", SearchSpace, Sequence[Mapping[str, Any]]],
    *,
    popsize: int = 5,
    rounds: int = 10,
    output_dir: Optional[Union[str, "os.PathLike[str]"]] = None,
    evaluator: str = "populationbased",
    tuning_strategy: str = "pshe2",
    gpu: Optional[str] = None,
    workers: Optional[int] = None,
    seed: Optional[int] = None,
    passthrough: Optional[Mapping[str, Any]] = None,
    timeout: Optional[float] = None,
    max_retries: int = 0,
    kill_grace: float = 5.0,
    resume: bool = False,
    backend: str = "local",
    scheduler_address: Optional[str] = None,
    asynchronous: bool = False,
    echo: Optional[Callable[[str], None]] = print,
    observers: Sequence[SearchObserver] = (),
    visualdl: bool = True,
    progress: bool = False,
) -> SearchResult:
    """Tune `script` over `params` (an hparam.yaml path, a SearchSpace or a param_list).

    Keyword arguments mirror the CLI options (`rounds` is `--round`); `passthrough` maps the
    CLI's trailing `name value` pairs. `echo=None` keeps the terminal quiet; `observers` are
    extra views of the search (see `SearchObserver`); `asynchronous=True` lets each candidate
    move on as soon as its own trial ends (see `async_search`); `visualdl` writes the VisualDL logs
    under `<output_dir>/visualization` and `progress` shows a live progress line. `resume=True` continues the search
    journaled in `output_dir` (which is then required). Without a seed, a
    random one is drawn and kept in the result and the journal, so any search can be repeated.
    """
    if resume and output_dir is None:
        raise ConfigError("--resume needs --output_dir: the folder of the search to continue")
    space = load_space(params)
    config = SearchConfig(
        script=Path(script).resolve(),
        space=space,
        output_dir=Path(output_dir) if output_dir is not None else default_output_dir(),
        slots=build_slots(gpu, workers),
        seed=int(seed) if seed is not None else None,
        popsize=popsize,
        rounds=rounds,
        evaluator=evaluator,
        strategy=tuning_strategy,
        passthrough=[(str(k), str(v)) for k, v in (passthrough or {}).items()],
        timeout=timeout,
        max_retries=max_retries,
        kill_grace=kill_grace,
        backend=backend,
        scheduler_address=scheduler_address,
        asynchronous=asynchronous,
    )
    views: List[SearchObserver] = []
    if visualdl or progress:
        from .views.progress import ProgressView
        from .views.visualdl import VisualDLView

        views += [VisualDLView()] if visualdl else []
        views += [ProgressView()] if progress else []
    search_class = Search
    if asynchronous:
        from .async_search import AsyncSearch, check_async

        check_async(tuning_strategy)
        search_class = AsyncSearch
    return search_class(config, echo=echo if echo is not None else (lambda line: None), observers=[*views, *observers], resume=resume).run()
