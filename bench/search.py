"""python -m bench.search --study lr-wd: an Optuna search over a study's space, every trial in MLflow.

A study file's [search] table says what to search:

    [search]
    objective = "val_acc"            # best validation accuracy, maximised (the only objective:
                                     # the test set never chooses anything)
    trials = 10                      # the total the study should hold (see below)
    timeout = 600                    # optional: stop claiming new trials after this many seconds
    sampler = { name = "tpe", n_startup_trials = 4 }            # tpe (default), random, grid
    pruner = { name = "median", n_warmup_steps = 2 }            # median (default), hyperband, none

    [search.space]                   # names are RunConfig fields
    lr = { type = "float", low = 0.005, high = 0.3, log = true }
    batch_size = { type = "categorical", choices = [64, 128, 256] }
    warmup_epochs = { type = "float", low = 0, high = 1, step = 0.25 }
    optimizer = { type = "categorical", choices = ["sgd", "adam"] }
    # a range chosen by another (categorical) parameter's value; Optuna sees lr.sgd and lr.adam
    # lr = { type = "float", log = true, by = "optimizer", ranges = { sgd = [0.005, 0.3], adam = [1e-4, 3e-3] } }

    [search.budgets.smoke]           # optional, per budget: trials, timeout, sampler, pruner, and
    space.lr = { ... }               # space entries that replace the top-level ones of that name

Sampler and pruner options are those of the Optuna class (TPESampler, RandomSampler, GridSampler;
MedianPruner, HyperbandPruner, whose max_resource defaults to the epochs); a sampler `seed` is
offset by one for every worker start on the study, so workers (and a resumed search) never draw
the same sequence. The grid sampler needs finite values (choices, or a step) and caps --trials
at the number of grid points.

Trials come from the runner (bench.runner), as for ablations: the Optuna study NAME-search-LABEL
in the storage is the queue; each trial is one MLflow child run named `trial N` under the parent
run of the study at that budget, reporting validation accuracy every epoch so the pruner can stop
it (a pruned run is KILLED with tag bench.state=pruned, its curve kept).

`--trials N` is the total the study should hold, not N more: every trial counts (complete, pruned,
failed, running or queued) except a trial whose worker died and which was queued again, since its
retry stands in for it. Counting and asking happen under the storage's lock, so any number of
workers stop at exactly N. A retry has the dead trial's config, so it resumes that trial's MLflow
run and checkpoint. A proposal that repeats an earlier trial's config (small discrete spaces) is
not trained again: it gets that trial's outcome and a `repeat_of` attribute, and no run of its own.

When no trial is left running or queued, the parent run gets the best trial (metrics best.value,
best.trial and best.<param>, tags best.<param> for categorical values; metrics, stepped by the
number of complete trials, because a resumed search may find a better one), the parameter
importances (metrics importance.<param>; skipped with a note below 2 complete trials or 2
parameters) and Optuna's plots as PNGs under search/.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.pruners import HyperbandPruner, MedianPruner, NopPruner  # noqa: E402
from optuna.samplers import GridSampler, RandomSampler, TPESampler  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from bench import preflight, runner, studies  # noqa: E402
from bench.config import RunConfig  # noqa: E402
from bench.errors import BenchError, cli, redact  # noqa: E402
from bench.progress import console, out  # noqa: E402  (notes on stderr, results on stdout)
from bench.tracking import Tracker, registry_name  # noqa: E402
from bench.train import add_config_flags, given_settings  # noqa: E402

OBJECTIVE = "val_acc"
TYPES = ("float", "int", "categorical")
PARAM_KEYS = {"type", "low", "high", "log", "step", "choices", "by", "ranges"}
SEARCH_KEYS = {"objective", "space", "sampler", "pruner", "trials", "timeout", "budgets"}
BUDGET_KEYS = {"space", "sampler", "pruner", "trials", "timeout"}
NOT_OVERRIDES = ("budget",)  # the budget label is made from the overrides
TOP_ROWS = 10


class QueueGridSampler(GridSampler):
    """GridSampler for ask-and-tell workers.

    Optuna's calls Study.stop() after the last grid point, which raises outside Study.optimize;
    here the worker stops asking once every point has a trial (Plan.wanted).
    """

    def after_trial(self, study, trial, state, values) -> None:
        pass


SAMPLERS = {"tpe": TPESampler, "random": RandomSampler, "grid": QueueGridSampler}
PRUNERS = {"median": MedianPruner, "hyperband": HyperbandPruner, "none": NopPruner}


# --- the [search] table -------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One dimension of the space: a RunConfig field and how to sample it."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    by: str | None = None  # the categorical parameter whose value picks the range
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def suggest(self, trial: optuna.Trial, chosen: dict[str, Any]) -> Any:
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        name, low, high = self.name, self.low, self.high
        if self.by is not None:
            key = chosen[self.by]
            name, (low, high) = f"{self.name}.{key}", self.ranges[key]
        if self.type == "int":
            return trial.suggest_int(name, low, high, step=self.step or 1, log=self.log)
        return trial.suggest_float(name, low, high, step=self.step, log=self.log)

    def extremes(self) -> list[Any]:
        """Every value at an edge of the space, to check against RunConfig before anything runs."""
        if self.type == "categorical":
            return list(self.choices)
        if self.by is not None:
            return [v for bounds in self.ranges.values() for v in bounds]
        return [self.low, self.high]

    def grid(self) -> list[Any]:
        if self.type == "categorical":
            return list(self.choices)
        step = self.step or 1  # only an int may come without a step here (see _check_components)
        count = int(round((self.high - self.low) / step)) + 1
        values = [self.low + i * step for i in range(count)]
        return [int(v) if self.type == "int" else round(v, 12) for v in values if v <= self.high + 1e-12]

    def text(self) -> str:
        if self.type == "categorical":
            return f"{self.name} in {{{', '.join(map(str, self.choices))}}}"
        scale = " log" if self.log else ""
        step = f" step {self.step}" if self.step else ""
        if self.by is not None:
            ranges = ", ".join(f"{k}: [{lo:g}, {hi:g}]" for k, (lo, hi) in self.ranges.items())
            return f"{self.name} {self.type}{scale} by {self.by} ({ranges})"
        return f"{self.name} {self.type}{scale} [{self.low:g}, {self.high:g}]{step}"


@dataclass(frozen=True)
class Plan:
    """A study's [search] table at one budget, validated."""

    space: dict[str, Param]  # in sampling order: a `by` parameter after the one it depends on
    trials: int
    timeout: float | None
    sampler: dict[str, Any]  # {"name": ..., **options}
    pruner: dict[str, Any]

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        chosen: dict[str, Any] = {}
        for name, param in self.space.items():
            chosen[name] = param.suggest(trial, chosen)
        return chosen

    @property
    def wanted(self) -> int:
        """The trials the study should hold: --trials, or fewer if a grid has fewer points."""
        if self.sampler["name"] != "grid":
            return self.trials
        return min(self.trials, math.prod(len(p.grid()) for p in self.space.values()))

    def make_sampler(self, worker_start: int = 0):
        options = {k: v for k, v in self.sampler.items() if k != "name"}
        if options.get("seed") is not None:
            options["seed"] += worker_start
        if self.sampler["name"] == "grid":
            return QueueGridSampler({n: p.grid() for n, p in self.space.items()}, **options)
        return SAMPLERS[self.sampler["name"]](**options)

    def make_pruner(self, epochs: int):
        options = {k: v for k, v in self.pruner.items() if k != "name"}
        if self.pruner["name"] == "hyperband":
            options.setdefault("max_resource", epochs)  # a trial's resource is its epochs
        return PRUNERS[self.pruner["name"]](**options)

    @property
    def fingerprint(self) -> str:
        """The space's identity: a study must not continue under a different space."""
        text = json.dumps({n: vars(p) for n, p in self.space.items()}, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_plan(study: studies.Study, budget: str, settings: dict[str, Any],
              trials: int | None = None, timeout: float | None = None) -> Plan:
    """Validate the study's [search] table for `budget` against the settings every trial shares."""
    where = f"{study.path}: search"
    raw = study.search
    if not isinstance(raw, dict):
        raise BenchError(f"{where} must be a table ([search])")
    _known_keys(raw, SEARCH_KEYS, where)
    objective = raw.get("objective", OBJECTIVE)
    if objective != OBJECTIVE:
        raise BenchError(f"{where}.objective {objective!r} is not supported: searches maximise "
                         f"{OBJECTIVE!r} (validation accuracy); the test set never chooses anything")
    budgets = _table(raw.get("budgets", {}), f"{where}.budgets")
    for name in budgets:
        if name not in study.budgets:
            _unknown(f"{where}.budgets", "budget", name, study.budgets)
    own = _table(budgets.get(budget, {}), f"{where}.budgets.{budget}")
    _known_keys(own, BUDGET_KEYS, f"{where}.budgets.{budget}")
    merged = {**raw, **{k: v for k, v in own.items() if k != "space"}}
    space_raw = {**_table(raw.get("space", {}), f"{where}.space"), **_table(own.get("space", {}), f"{where}.budgets.{budget}.space")}
    if not space_raw:
        raise BenchError(f"{where}.space is empty: name at least one setting to search, e.g. "
                         'lr = { type = "float", low = 0.005, high = 0.3, log = true }')
    space = _order([_param(name, spec, f"{where}.space.{name}") for name, spec in space_raw.items()], where)
    plan = Plan(
        space=space,
        trials=_count(trials if trials is not None else merged.get("trials", 10), "--trials" if trials is not None else f"{where}.trials"),
        timeout=_seconds(timeout if timeout is not None else merged.get("timeout"), "--timeout" if timeout is not None else f"{where}.timeout"),
        sampler=_component(merged.get("sampler", "tpe"), SAMPLERS, "sampler", where),
        pruner=_component(merged.get("pruner", "median"), PRUNERS, "pruner", where),
    )
    _check_against_config(plan, settings, where)
    _check_components(plan, settings, where)
    return plan


def _param(name: str, spec: Any, where: str) -> Param:
    if not isinstance(spec, dict):
        raise BenchError(f'{where} must be a table, e.g. {{ type = "float", low = 0.001, high = 0.1, log = true }}')
    _known_keys(spec, PARAM_KEYS, where)
    searchable = [n for n in RunConfig.__dataclass_fields__ if n != "budget"]
    if name not in searchable:
        raise BenchError(f"{where}: {name!r} is not a run setting; searchable settings: {', '.join(searchable)}")
    kind = spec.get("type")
    if kind not in TYPES:
        _unknown(where, "distribution type", kind, TYPES)
    if kind == "categorical":
        values = spec.get("choices")
        if not isinstance(values, list) or not values:
            raise BenchError(f"{where}: a categorical parameter needs a non-empty list of choices")
        if len(set(map(repr, values))) != len(values):
            raise BenchError(f"{where}: choices repeat: {values}")
        if set(spec) - {"type", "choices"}:
            raise BenchError(f"{where}: a categorical parameter takes only choices, not {sorted(set(spec) - {'type', 'choices'})[0]}")
        return Param(name, kind, choices=tuple(values))
    if "choices" in spec:
        raise BenchError(f"{where}: choices belong to type = \"categorical\", not {kind}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise BenchError(f"{where}: log must be true or false, got {log!r}")
    step = spec.get("step")
    if step is not None:
        _number(step, kind, f"{where}.step")
        if step <= 0:
            raise BenchError(f"{where}: step must be above 0, got {step}")
        if log:
            raise BenchError(f"{where}: a log scale takes no step (Optuna samples either one)")
    by = spec.get("by")
    if by is None:
        if "ranges" in spec:
            raise BenchError(f"{where}: ranges need by = \"<categorical parameter>\" to choose among them")
        low, high = _range(spec.get("low"), spec.get("high"), kind, log, where)
        return Param(name, kind, low=low, high=high, log=log, step=step)
    if "low" in spec or "high" in spec:
        raise BenchError(f"{where}: give either low/high or by + ranges, not both")
    ranges = _table(spec.get("ranges"), f"{where}.ranges") if "ranges" in spec else {}
    if not ranges:
        raise BenchError(f"{where}: by = {by!r} needs ranges = {{ <choice> = [low, high], ... }}")
    bounds = {}
    for key, pair in ranges.items():
        if not isinstance(pair, list) or len(pair) != 2:
            raise BenchError(f"{where}.ranges.{key} must be [low, high], got {pair!r}")
        bounds[key] = _range(pair[0], pair[1], kind, log, f"{where}.ranges.{key}")
    return Param(name, kind, log=log, step=step, by=str(by), ranges=bounds)


def _range(low: Any, high: Any, kind: str, log: bool, where: str) -> tuple[float, float]:
    if low is None or high is None:
        raise BenchError(f"{where}: a {kind} parameter needs low and high")
    _number(low, kind, f"{where} low")
    _number(high, kind, f"{where} high")
    if low > high:
        raise BenchError(f"{where}: the range is inverted (low {low} > high {high}); swap them")
    if low == high:
        raise BenchError(f"{where}: the range is empty (low = high = {low}); widen it, or fix the "
                         "setting in the study's [base] instead of searching it")
    if log and low <= 0:
        raise BenchError(f"{where}: a log range must stay above 0, got low = {low}; raise low (e.g. {high / 1000:g})")
    return low, high


def _number(value: Any, kind: str, where: str) -> None:
    ok = isinstance(value, int) if kind == "int" else isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or isinstance(value, bool):
        raise BenchError(f"{where} must be {'an integer' if kind == 'int' else 'a number'}, got {value!r}")


def _order(params: list[Param], where: str) -> dict[str, Param]:
    """Sampling order: a parameter with `by` comes after the categorical one it names."""
    space = {p.name: p for p in params}
    for param in params:
        if param.by is None:
            continue
        anchor = space.get(param.by)
        if anchor is None or anchor.type != "categorical":
            raise BenchError(f"{where}.space.{param.name}: by = {param.by!r} must name a categorical parameter of the space")
        if set(param.ranges) != {str(c) for c in anchor.choices}:
            raise BenchError(f"{where}.space.{param.name}: ranges must have exactly one entry per {param.by} choice "
                             f"({', '.join(map(str, anchor.choices))}), got {', '.join(param.ranges)}")
    return {p.name: p for p in sorted(params, key=lambda p: p.by is not None)}


def _component(spec: Any, known: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
    """A sampler or pruner: a name, or a table with a name and the Optuna class's options."""
    spec = {"name": spec} if isinstance(spec, str) else spec
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise BenchError(f'{where}.{kind} must be a name or a table like {{ name = "{next(iter(known))}", ... }}')
    if spec["name"] not in known:
        _unknown(f"{where}.{kind}", kind, spec["name"], known)
    accepted = set(inspect.signature(known[spec["name"]].__init__).parameters) - {"self", "search_space"}
    for option in spec:
        if option != "name" and option not in accepted:
            raise BenchError(f"{where}.{kind}: {spec['name']} takes no option {option!r}; it takes: "
                             f"{', '.join(sorted(accepted)) or 'none'}")
    return dict(spec)


def _check_against_config(plan: Plan, settings: dict[str, Any], where: str) -> None:
    """Each edge of the space must make a valid RunConfig, or the search fails hours in."""
    for param in plan.space.values():
        for value in param.extremes():
            try:
                RunConfig.from_dict({**settings, param.name: value})
            except BenchError as exc:
                raise BenchError(f"{where}.space.{param.name}: {value!r} cannot be trained: {exc}") from None


def _check_components(plan: Plan, settings: dict[str, Any], where: str) -> None:
    if plan.sampler["name"] == "grid":
        for param in plan.space.values():
            if param.by is not None or (param.type == "float" and not param.step):
                raise BenchError(f"{where}.space.{param.name}: the grid sampler needs a finite set of values: "
                                 "give it choices (type = \"categorical\") or a step, and no by")
    try:
        plan.make_sampler()
        plan.make_pruner(RunConfig.from_dict(settings).epochs)
    except (TypeError, ValueError) as exc:
        raise BenchError(f"{where}: sampler {plan.sampler} or pruner {plan.pruner} rejected its options: {exc}") from None


def _known_keys(table: dict[str, Any], known: set[str], where: str) -> None:
    unknown = set(table) - known
    if unknown:
        raise BenchError(f"{where}: unknown key {sorted(unknown)[0]!r}; valid keys: {', '.join(sorted(known))}")


def _unknown(where: str, kind: str, value: Any, valid) -> None:
    raise BenchError(f"{where}: unknown {kind} {value!r}; choose one of: {', '.join(map(str, valid))}")


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BenchError(f"{where} must be a table")
    return value


def _count(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BenchError(f"{where} must be a whole number of trials, at least 1; got {value!r}")
    return value


def _seconds(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
        raise BenchError(f"{where} must be a finite number of seconds above 0; got {value!r}")
    return float(value)


# --- the job: where trials come from ------------------------------------------------------------


def standing(study: optuna.Study) -> list[FrozenTrial]:
    """The trials that count toward --trials: all but those a retry (their re-queued copy) replaced."""
    trials = study.get_trials(deepcopy=False)
    replaced = {n for t in trials for n in t.system_attrs.get("retry_history", ())}
    return [t for t in trials if t.number not in replaced]


class SearchJob(runner.Job):
    plan: Plan
    settings: dict[str, Any]  # every RunConfig value the trials share, the budget label included
    deadline: float | None  # time.monotonic() after which no trial is claimed

    def claim(self) -> optuna.Trial | None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            return None
        # Count and ask as one step, so that workers together stop at exactly --trials. ask() pops
        # a queued trial first (a dead worker's, queued again), else samples a new one.
        with runner.storage_lock(self.storage_url):
            while (self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                   or len(standing(self.study)) < self.plan.wanted):
                trial = self.study.ask()
                if not self.settle_repeat(trial):
                    return trial
        return None

    def settle_repeat(self, trial: optuna.Trial) -> bool:
        """Tell Optuna the outcome of a proposal that repeats an earlier trial, without training it.

        A run is its config: a repeat would share the earlier trial's MLflow run and checkpoint.
        Samplers propose repeats on spaces with few discrete values.
        """
        config_hash = self.describe(trial)[0].hash  # samples the trial's params now
        trial.set_user_attr("config_hash", config_hash)
        twin = next((t for t in standing(self.study)
                     if t.user_attrs.get("config_hash") == config_hash and t.number != trial.number), None)
        if twin is None:
            return False
        trial.set_user_attr("repeat_of", twin.number)
        if twin.state == TrialState.COMPLETE:
            self.study.tell(trial, twin.value)
        else:  # pruned, failed, or in training by another worker now
            self.study.tell(trial, state=TrialState.PRUNED if twin.state == TrialState.PRUNED else TrialState.FAIL)
        return True

    def describe(self, trial: optuna.Trial):
        config = RunConfig.from_dict({**self.settings, **self.plan.sample(trial)})
        return config, f"trial {trial.number}", {"study": self.study_name}

    def total(self) -> int:
        return self.plan.wanted

    def all_finished(self) -> bool:
        """No trial failed, in this worker or any other (a pruned one is the search at work)."""
        return not self.failures and not any(t.state == TrialState.FAIL for t in standing(self.study))

    def done(self) -> int:
        return sum(t.state.is_finished() for t in standing(self.study))

    def progress_info(self) -> str:
        counts = tally(self.study)
        text = f"{counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed"
        best = best_trial(self.study)
        if best is not None:
            text += f"  best {best.value:.4f} (trial {best.number})"
        return text


def tally(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for trial in standing(study):
        counts[trial.state] += 1
    return counts


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: t.value) if complete else None


# --- the command ----------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.search",
        description="Search a study's [search] space with Optuna; every trial, curve and checkpoint goes to MLflow.",
    )
    p.add_argument("--study", help="a name from studies/ (see --list) or the path of a study TOML file")
    p.add_argument("--list", action="store_true", help="show the studies that have a search, with their spaces")
    p.add_argument("--budget", help="smoke (tests), cpu (minutes on a laptop) or full (GPU); default: the study's")
    p.add_argument("--trials", type=int, help="the total number of trials the study should hold (default: the study's)")
    p.add_argument("--timeout", type=float, help="stop claiming new trials after this many seconds")
    runner.add_worker_flags(p, "trials")
    group = p.add_argument_group("overrides (any run setting the search does not sample, applied to every trial)")
    add_config_flags(group, defaults=False, exclude=NOT_OVERRIDES)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        good, bad = studies.load_all()
        out.print(searches_table(good))  # a table: stdout, as every result
        for problem in bad:
            console.print(f"[red]skipped:[/] {escape(problem)}", soft_wrap=True)
        return 0
    if not args.study:
        raise BenchError("say which study to search: --study NAME (python -m bench.search --list shows them)")
    runner.check_workers(args)
    study = studies.load(args.study)
    if study.search is None:
        raise BenchError(f"study {study.name!r} has no [search] table, only variants: python -m bench.ablation --study {study.name}")
    overrides = RunConfig.typed({**{k: v for k, v in given_settings(args).items() if k not in NOT_OVERRIDES},
                                 **runner.run_settings(args)})
    shared, label = study.settings(args.budget, overrides)
    budget = study.budget(args.budget)
    settings = {**shared, **overrides, "budget": label}  # a trial trains one seed: the settings' (0 unless set)
    plan = load_plan(study, budget.name, settings, trials=args.trials, timeout=args.timeout)
    searched = sorted(set(overrides) & set(plan.space))
    if searched:
        raise BenchError(f"--{searched[0].replace('_', '-')} is sampled by this search; drop the flag, "
                         f"or copy the study and take {searched[0]} out of its [search.space]")
    shared_config = RunConfig.from_dict(settings)  # what every trial has before sampling
    runner.check_processes(shared_config, args)
    edges = [shared_config.replace(**{p.name: v}) for p in plan.space.values() for v in p.extremes()]
    preflight.check([shared_config, *edges], data_dir=args.data_dir, checkpoint_root=Path(args.checkpoint_root))

    tracker = Tracker(args.tracking_uri)
    storage = runner.open_storage(args.storage)  # a bad URL fails here in one line, password hidden
    name = f"{study.name}-search-{label}"
    with runner.storage_lock(args.storage):
        optuna_study, experiment_id, parent_id = runner.open_study(
            name, args.storage, tracker, study.name,
            {"bench.budget": label, "bench.dataset": shared_config.dataset, "bench.kind": "search",
             "bench.space": "; ".join(p.text() for p in plan.space.values())},
            sampler=plan.make_sampler(), pruner=plan.make_pruner(shared_config.epochs), storage=storage,
        )
        _same_space(optuna_study, plan, args.storage)
        starts = optuna_study.user_attrs.get("worker_starts", 0)
        optuna_study.set_user_attr("worker_starts", starts + 1)
        if starts and plan.sampler.get("seed") is not None:
            optuna_study.sampler = plan.make_sampler(worker_start=starts)
        job = SearchJob(study.name, name, optuna_study, tracker, experiment_id, parent_id, prune=True,
                        storage=storage, storage_url=args.storage, system_metrics=args.system_metrics)
        job.plan, job.settings = plan, settings
        command = redact("python -m bench.search " + shlex.join(sys.argv[1:] if argv is None else argv))
        tracker.describe_parent(parent_id, (
            f"**{study.name}** search: {study.description}\n\nBudget `{label}`: {budget.description}\n\n"
            f"Space: {'; '.join(p.text() for p in plan.space.values())}; {plan.wanted} trials, sampler "
            f"{plan.sampler['name']}, pruner {plan.pruner['name']}, maximising validation accuracy.\n\n"
            f"Command: `{command}`"), {k: v for k, v in shared_config.to_dict().items() if k not in plan.space})
        job.deadline = time.monotonic() + plan.timeout if plan.timeout else None
        present = len(standing(optuna_study))
    if not args.quiet:
        announce(study, budget, plan, settings, present, args)

    helpers = runner.spawn_helpers("bench.search", argv, args.workers - 1)
    try:
        runner.work(job, checkpoint_root=Path(args.checkpoint_root), data_dir=args.data_dir,
                    quiet=args.quiet, helpers=helpers)
    finally:
        runner.stop_helpers(helpers)
    if args.quiet:  # a helper: the worker that started it reports
        return 0 if job.all_finished() else 1

    notes = []
    busy = optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    if busy:
        notes.append(f"{len(busy)} trial(s) still running or queued elsewhere: the last worker to finish logs the summary")
    else:
        notes += log_summary(job)
    out.print(top_trials_table(optuna_study, f"{name}: top trials by best validation accuracy"))
    counts = tally(optuna_study)
    out.print(f"{counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
                  f"{counts[TrialState.FAIL]} failed of {plan.wanted} wanted")
    best = best_trial(optuna_study)
    if best is not None:
        out.print(f"best: trial {best.number}, val acc [bold green]{best.value:.4f}[/], "
                      + escape(", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items())))
    for note in notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    console.print(f"MLflow store: {escape(redact(tracker.uri))}; browse it with: [bold]{escape(tracker.ui_command)}[/]")
    console.print(f"Optuna study {name}: [bold]{escape(dashboard_command(args.storage))}[/]")
    for failure in job.failures:
        console.print(f"[red]failed:[/] {escape(failure)}")
    return 0 if job.all_finished() else 1


def _same_space(study: optuna.Study, plan: Plan, storage: str | None) -> None:
    recorded = study.user_attrs.get("search_space")
    if recorded is None:
        study.set_user_attr("search_space", plan.fingerprint)
    elif recorded != plan.fingerprint:
        raise BenchError(
            f"Optuna study {study.study_name} in {runner.describe_storage(storage)} was started with another "
            "search space: its trials would not compare; search the new space under another --storage "
            "(or another budget label, e.g. with an override)"
        )


def announce(study: studies.Study, budget: studies.Budget, plan: Plan, settings: dict[str, Any],
             present: int, args) -> None:
    config = RunConfig.from_dict(settings)
    others = [b for b in study.budgets if b != budget.name]
    origin = "chosen" if args.budget else "the default"
    options = lambda spec: ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name")  # noqa: E731
    timeout = f", stop claiming after {plan.timeout:g} s" if plan.timeout else ""
    console.print(
        f"[bold]{escape(study.name)}[/]: {escape(study.description)}\n"
        f"budget [bold]{escape(config.budget)}[/] ({origin}; others: {', '.join(others) or 'none'}): {escape(budget.description)}\n"
        f"{plan.wanted} trials in all ({present} in the study already{timeout}) of {config.model}"
        f"{'-bn' if config.batch_norm else ''} on {config.dataset} (subset {config.subset or 'all'}, {config.epochs} epochs, "
        f"width {config.width}, batch {config.batch_size}, device {config.device}), maximising validation accuracy\n"
        f"space: {escape('; '.join(p.text() for p in plan.space.values()))}\n"
        f"sampler {plan.sampler['name']}({options(plan.sampler)}), pruner {plan.pruner['name']}({options(plan.pruner)}), "
        f"storage {escape(runner.describe_storage(args.storage))}"
    )


def dashboard_command(storage: str | None) -> str:
    url = storage or str(runner.DEFAULT_STORAGE)
    shown = redact(url)
    hint = " (put the password back where *** is)" if shown != url else ""
    return f"optuna-dashboard {shown}{hint}"


# --- when the study stops -------------------------------------------------------------------------


def log_summary(job: SearchJob) -> list[str]:
    """Best trial, importances and Optuna's plots on the parent run; returns notes for the person."""
    study, tracker, parent = job.study, job.tracker, job.parent_run_id
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return ["no trial completed: nothing to summarise in MLflow"]
    notes = []
    best = best_trial(study)
    metrics = {"best.value": best.value, "best.trial": best.number}
    for key, value in best.params.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[f"best.{key}"] = value
        else:  # MLflow metrics are numbers; and params could not change when a resumed search finds better
            tracker.set_tags(parent, {f"best.{key}": value})
    importances = {}
    names = {k for t in complete for k in t.params}
    if len(complete) < 2 or len(names) < 2:
        notes.append(f"parameter importances need 2+ complete trials and 2+ parameters "
                     f"({len(complete)} complete, {len(names)} parameter(s)): skipped")
    else:
        importances = optuna.importance.get_param_importances(study)
        metrics.update({f"importance.{k}": v for k, v in importances.items()})
    # step = complete trials so far: a resumed search adds points instead of overwriting
    tracker.log_metrics(parent, metrics, step=len(complete))
    trained = [t for t in complete if "mlflow_run_id" in t.user_attrs]  # a repeat has no run of its own
    if trained:
        best_run = max(trained, key=lambda t: t.value).user_attrs["mlflow_run_id"]
        version = tracker.register_best(job.optuna_name, best_run)
        notes.append(f"best trial's model registered as models:/{registry_name(job.optuna_name)}@best (version {version})")

    plots = {"optimization_history": optuna.visualization.matplotlib.plot_optimization_history,
             "parallel_coordinate": optuna.visualization.matplotlib.plot_parallel_coordinate}
    if importances:
        plots["param_importances"] = optuna.visualization.matplotlib.plot_param_importances
    with tempfile.TemporaryDirectory() as tmp:
        # The search's report: every trial (csv) and the best ones in words (md), beside the plots.
        study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs")).to_csv(
            Path(tmp, "trials.csv"), index=False)
        Path(tmp, "summary.md").write_text(summary_markdown(study, job.optuna_name))
        for file, plot in plots.items():
            axes = plot(study)
            figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
            figure.savefig(Path(tmp, f"{file}.png"), dpi=110, bbox_inches="tight")
            plt.close(figure)
        tracker.log_artifacts(parent, sorted(Path(tmp).iterdir()), "search")
    return notes


def summary_markdown(study: optuna.Study, name: str, rows: int = TOP_ROWS) -> str:
    counts = tally(study)
    lines = [f"# {name}", "",
             f"{counts[TrialState.COMPLETE]} complete, {counts[TrialState.PRUNED]} pruned, "
             f"{counts[TrialState.FAIL]} failed; objective: best validation accuracy.", "",
             "| trial | val acc | params | MLflow run |", "|---:|---:|---|---|"]
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: -t.value)
    for trial in complete[:rows]:
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        lines.append(f"| {trial.number} | {trial.value:.4f} | {params} | {trial.user_attrs.get('mlflow_run_id', '')} |")
    return "\n".join(lines) + "\n"


def top_trials_table(study: optuna.Study, title: str, rows: int = TOP_ROWS) -> Table:
    """Complete trials by value, then pruned ones by their best epoch, then failed ones."""

    def score(trial: FrozenTrial) -> tuple:
        rank = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.RUNNING: 2}.get(trial.state, 3)
        return rank, -(_reached(trial) or 0.0)

    trials = sorted(standing(study), key=score)
    table = Table(title=escape(title), caption=f"{len(trials) - rows} more not shown" if len(trials) > rows else None)
    for column in ("trial", "state", "val acc", "epochs", "params"):
        table.add_column(column, justify="left" if column in ("state", "params") else "right")
    colours = {TrialState.COMPLETE: "green", TrialState.PRUNED: "yellow", TrialState.FAIL: "red"}
    for trial in trials[:rows]:
        reached = _reached(trial)
        colour = colours.get(trial.state, "white")
        repeat = f" (repeat of {trial.user_attrs['repeat_of']})" if "repeat_of" in trial.user_attrs else ""
        table.add_row(
            str(trial.number),
            f"[{colour}]{trial.state.name.lower()}[/]{repeat}",
            "" if reached is None else f"{reached:.4f}",
            str(len(trial.intermediate_values)),
            escape(", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())),
        )
    return table


def _reached(trial: FrozenTrial) -> float | None:
    """A complete trial's value; otherwise the best validation accuracy it reported."""
    if trial.state == TrialState.COMPLETE:
        return trial.value
    return max(trial.intermediate_values.values(), default=None)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def searches_table(every: list[studies.Study]) -> Table:
    table = Table(title="searches (python -m bench.search --study NAME [--budget B] [--trials N])")
    for column in ("study", "space", "budgets (default first)", "description"):
        table.add_column(column)
    for study in every:
        name = study.path.stem
        if study.search is None:
            continue
        budgets = [study.default_budget] + [b for b in study.budgets if b != study.default_budget]
        space = study.search.get("space", {})
        table.add_row(name, ", ".join(space), ", ".join(budgets), study.description)
    return table


if __name__ == "__main__":
    cli(main)
