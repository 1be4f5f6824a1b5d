"""`--resume`: continue a search from its journal, losing no finished trial and re-running none.

Everything comes from the one replay of the journal (journal.py). The strategy is not loaded
from a saved blob: it is built again from its seed and told, in the journaled order, the results
it was told before (a round's losses in round mode, one particle's result at a time with
`--async`). Strategies are deterministic, so this rebuilds exactly the state the dead tuner had,
and the journal holds only data, never a pickle (docs/security.md). Each replayed proposal is
compared with the candidate the journal says was proposed; if they differ (another `cma` or
numpy version, say), resume says so in one line and continues from the replayed state.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import __version__
from .errors import ConfigError, path_error
from .journal import JOURNAL, FinishEvent, QueuedEvent, SearchState, ToldEvent, replay
from .options import resume_conflicts
from .policies import AsyncPolicy
from .records import TrialRecord
from .runner import ProcessIdentity, Status, judge_score, read_result

if TYPE_CHECKING:  # pragma: no cover
    from .policies import RoundPolicy
    from .search import Search, SearchConfig

log = logging.getLogger("autofinetune")


def read_for_resume(config: "SearchConfig") -> SearchState:
    """The journal of the search in `config.output_dir`, refused in one line when it cannot be
    continued with this configuration."""
    try:
        path = config.output_dir.resolve() / JOURNAL
        found = path.is_file()
    except (OSError, RuntimeError) as error:
        raise path_error("--output_dir", config.output_dir, error, "pass the --output_dir of an earlier search") from None
    if not found:
        raise ConfigError(f"--resume: {path} not found; fix: pass the --output_dir of an earlier search (or drop --resume to start a new one)")
    state = replay(path)
    if not state.has_start:
        raise ConfigError(f"--resume: {path} has no start record; fix: start a new search in an empty --output_dir")
    old = state.config
    if old.get("script") != str(config.script):
        raise ConfigError(f"--resume: the training script differs from the interrupted search ({old.get('script')!r} then, "
                          f"{str(config.script)!r} now); fix: resume with the original settings, or start a new search in another --output_dir")
    if old.get("space_fingerprint") != config.space.fingerprint():
        raise ConfigError(f"--resume: the param file (--param_file content) differs from the interrupted search "
                          f"({old.get('space_source')!r} then, {config.space.source!r} now); fix: resume with the original param file, "
                          f"or start a new search in another --output_dir")
    if [list(p) for p in old.get("passthrough", [])] != [list(p) for p in config.passthrough]:
        raise ConfigError(f"--resume: the trailing 'name value' arguments differ from the interrupted search ({old.get('passthrough')!r} then, "
                          f"{[list(p) for p in config.passthrough]!r} now); fix: resume with the original settings")
    # A journal that lacks an option was written before it existed: options the command line does
    # not name take the defaults of the release that wrote it (registry.journal_defaults), on both
    # sides of the comparison, so the same command resumes the search as it began.
    then = dict(old)
    now: Dict[str, Any] = dict(config.strategy_options)
    if old.get("strategy") == config.tuning_strategy:  # else the strategy itself is the difference named
        then["strategy_options"] = _normalised_strategy_options(config, old.get("strategy_options"), old.get("strategy_options") or {})
        now = _normalised_strategy_options(config, old.get("strategy_options"), config.strategy_options)
    if old.get("pruner", "none") == config.pruner:  # else the pruner itself is the difference named
        then["pruner_options"] = _normalised_pruner_options(config.pruner, old.get("pruner_options") or {})
    conflict = resume_conflicts(then, {**config.options, "strategy_options": now,
                                       "pruner_options": _normalised_pruner_options(config.pruner, config.pruner_options)})
    if conflict:
        raise ConfigError(conflict)
    if config.seed is not None and config.seed != old.get("seed"):
        raise ConfigError(f"--resume: --seed={config.seed} differs from the interrupted search's seed {old.get('seed')}; "
                          f"fix: drop --seed or pass --seed={old.get('seed')}")
    if not isinstance(old.get("seed"), int):
        raise ConfigError(f"--resume: {path} records no seed, so its strategy cannot be replayed; fix: start a new search")
    if old.get("version") != __version__:
        log.warning("--resume: the search was started with autofinetune %s, this is %s; resuming anyway",
                    old.get("version", "before 0.1"), __version__)
    return state


def _normalised_strategy_options(config: "SearchConfig", journaled: Optional[Dict[str, Any]], given: Dict[str, Any]) -> Dict[str, Any]:
    """Strategy options as the resumed search runs them: `given`, the rest at the journal's defaults."""
    from .strategies.registry import resumed_options

    return resumed_options(config.tuning_strategy, config.space.dim, config.popsize, journaled, given, config.asynchronous)


def _normalised_pruner_options(name: str, given: Dict[str, Any]) -> Dict[str, Any]:
    """Pruner options with the defaults filled in, as a new search would journal them."""
    from .pruners import check_pruner_options

    return check_pruner_options(name, {key: str(value) for key, value in given.items()})


def _restore_pruning(search: "Search", state: SearchState, recovered: Dict[Tuple[int, int, int], TrialRecord]) -> None:
    """The pruner hears again, in journal order, every report and end of the attempts that
    ended, so it makes the decisions the dead tuner would have made (docs/pruning.md); the
    curves of the kept trials come back for the views, and so does the worst final score.

    A `recovered` attempt (its result file was complete, its end never journaled) is judged here
    as the first run judged its trials: pruned if the pruner decides so on its reports, however
    far the trial got after the decision (it may have read the stop file and reported before
    the dead tuner's launcher stopped it)."""
    for kind, attempt, value in state.pruner_history():
        record = recovered.get(attempt)
        if kind == "report":
            if search.pruner.report(attempt, value[0], value[1]) and record is not None and record.pruned_step is None:
                record.pruned_step = value[0]
        else:
            if record is not None:
                if record.pruned_step is not None:
                    record.status = Status.PRUNED
                value = str(record.status) if record.status in (Status.OK, Status.PRUNED) else "failed"
            search.pruner.finished(attempt, value)
    for trial in [*state.kept, *recovered.values()]:
        search.curves[(trial.round, trial.index)] = list(state.curve(trial))
        if trial.ok and trial.score is not None:
            search.worst_final = trial.score if search.worst_final is None else min(search.worst_final, trial.score)
    for record in recovered.values():
        if record.pruned:
            search._judge_pruned(record)


def restore(search: "Search", state: SearchState) -> None:
    """Rebuild the search's records, strategy, evaluator and policy from the replayed journal."""
    _stop_leftovers(search, state)
    kept = {(t.round, t.index): t for t in state.kept}
    recovered: Dict[Tuple[int, int, int], TrialRecord] = {}
    for key, queued in sorted(state.queued.items()):
        if key in kept:
            continue
        record = _recover_reported(queued)
        if record is not None:
            recovered[(*key, record.attempt)] = record
            state.pruning_log.append(("end", (*key, record.attempt), None))  # judged in _restore_pruning
    _restore_pruning(search, state, recovered)
    for (round_index, index, _attempt), record in recovered.items():
        search.journal.append(FinishEvent(trial=record))
        kept[(round_index, index)] = record
    replay_check = _ReplayCheck(search.config.tuning_strategy)
    if isinstance(search.policy, AsyncPolicy):
        _restore_async(search, search.policy, state, kept, replay_check)
    else:
        _restore_rounds(search, search.policy, state, kept, replay_check)
    if search.records.trials:
        search.records.write_views()
        if search.records.best is not None:
            search.records.update_best_model()


def _restore_rounds(search: "Search", policy: "RoundPolicy", state: SearchState, kept: Dict, check: "_ReplayCheck") -> None:
    current = state.last_round + 1
    for round_index in range(current):
        trials = sorted((t for (r, _), t in kept.items() if r == round_index), key=lambda t: t.index)
        check.compare(round_index, search.strategy.ask(), state.points(round_index))
        losses: List[Optional[float]] = [None] * search.config.popsize
        for trial in trials:
            if trial.index < len(losses):
                losses[trial.index] = trial.loss
        search.strategy.tell(losses)
        search.rounds_complete.add(round_index)
    if current > 0:
        search.evaluator.load_state_dict(state.round_events[current - 1].evaluator)
    for key, trial in sorted(kept.items()):
        search.records.add(trial)
        if key[0] == current:
            policy.done[key] = trial
    policy.round = current
    search.round_index = current
    rerun = sum(1 for (r, i) in state.queued if r == current and (r, i) not in kept)
    still = max(0, search.config.popsize - len(policy.done) - rerun) if current < search.config.rounds else 0
    search.echo(f"Resuming from {JOURNAL}: {len(search.records.trials)} finished trial(s) kept, "
                + (f"round {current} continues with {rerun} trial(s) to re-run and {still} still to start."
                   if current < search.config.rounds else f"all {search.config.rounds} round(s) are done already."))


def _restore_async(search: "Search", policy: "AsyncPolicy", state: SearchState, kept: Dict, check: "_ReplayCheck") -> None:
    """Re-tell the strategy every kept result in the order it heard them; results journaled but
    never told (the tuner died between the two) are told now, in (round, index) order."""
    told = [key for key in state.told if key in kept]
    untold = sorted(set(kept) - set(told))
    for key in told + untold:
        trial = kept[key]
        check.compare(trial.round, search.strategy.ask_particle(trial.index)[None, :], {0: trial.point})
        search.strategy.tell_particle(trial.index, trial.loss)
        if key in untold:
            search.journal.append(ToldEvent(round=trial.round, index=trial.index))
    for key in sorted(kept):
        search.records.add(kept[key])
        policy.add(kept[key])
    search.rounds_complete.update(r for r in state.rounds_complete)
    search.round_index = max((t.round for t in kept.values()), default=0)
    search.echo(f"Resuming the asynchronous search: {len(search.records.trials)} finished trial(s) kept.")


class _ReplayCheck:
    """Says once when a replayed proposal differs from the journaled one."""

    def __init__(self, strategy: str) -> None:
        self.strategy = strategy
        self.warned = False

    def compare(self, round_index: int, asked: np.ndarray, journaled: Dict[int, Sequence[float]]) -> None:
        if self.warned:
            return
        for index, point in journaled.items():
            if index < len(asked) and not np.allclose(asked[index], np.asarray(point, dtype=float), rtol=0, atol=1e-9):
                self.warned = True
                log.warning("--resume: replaying %s from its seed and the journaled results did not reproduce the journaled candidates "
                            "of round %d (another version of the strategy or of cma/numpy?); continuing from the replayed state",
                            self.strategy, round_index)
                return


def _stop_leftovers(search: "Search", state: SearchState) -> None:
    """Stop what still runs of trials the dead tuner started and never saw finish."""
    for key, event in sorted(state.running.items()):
        identity = ProcessIdentity(pid=event.pid, start_ticks=event.start_ticks, host=event.host, boot_id=event.boot_id,
                                   worker=event.worker, cookie=event.cookie if isinstance(event.cookie, str) else None,
                                   cgroup=event.cgroup if isinstance(event.cgroup, str) else None)
        if search.backend.stop_leftover(identity):
            where = f" on {event.worker}" if event.worker else ""
            search.echo(f"Stopped a leftover process group of round {key[0]} trial {key[1]} from the interrupted run (pid {event.pid}{where}).")


def _recover_reported(queued: QueuedEvent) -> Optional[TrialRecord]:
    """A trial whose result file was complete when the tuner died counts as finished."""
    if queued.token is None and queued.token_sha256 is None:
        return None  # nothing to tell the trial's own report from another's
    raw, why = read_result(Path(queued.result_path), queued.token, queued.token_sha256)
    if why:
        return None
    score, why = judge_score(raw)
    return TrialRecord(round=queued.round, index=queued.index, params=queued.params, point=queued.point,
                       status=Status.OK if score is not None else Status.INVALID, score=score, parent=queued.parent,
                       log_path=queued.log_path, model_dir=queued.model_dir, attempt=queued.attempt,
                       message=(why + "; " if why else "") + "exit status unknown: the trial reported before the tuner stopped")
