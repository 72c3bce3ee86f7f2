"""The [search] table of a study file, read and checked: what bench.search samples.

A study file's [search] table says what to search:

    [search]
    objective = "val_acc"            # best validation accuracy, maximised (the only objective:
                                     # the test set never chooses anything)
    trials = 10                      # the total the study should hold (see bench.search)
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
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.pruners import HyperbandPruner, MedianPruner, NopPruner
from optuna.samplers import GridSampler, RandomSampler, TPESampler

from bench.config import RunConfig
from bench.errors import BenchError
from bench.run import studies
from bench.search import checks

OBJECTIVE = "val_acc"
TYPES = ("float", "int", "categorical")
PARAM_KEYS = {"type", "low", "high", "log", "step", "choices", "by", "ranges"}
SEARCH_KEYS = {"objective", "space", "sampler", "pruner", "trials", "timeout", "budgets"}
BUDGET_KEYS = {"space", "sampler", "pruner", "trials", "timeout"}


class QueueGridSampler(GridSampler):
    """GridSampler for ask-and-tell workers.

    Optuna's calls Study.stop() after the last grid point, which raises outside Study.optimize;
    here the worker stops asking once every point has a trial (Plan.wanted).
    """

    def after_trial(self, study, trial, state, values) -> None:
        pass


SAMPLERS = {"tpe": TPESampler, "random": RandomSampler, "grid": QueueGridSampler}
PRUNERS = {"median": MedianPruner, "hyperband": HyperbandPruner, "none": NopPruner}


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
    def space_text(self) -> str:
        return "; ".join(p.text() for p in self.space.values())

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


def load_plan(
    study: studies.Study, budget: str, settings: dict[str, Any], trials: int | None = None, timeout: float | None = None
) -> Plan:
    """Validate the study's [search] table for `budget` against the settings every trial shares."""
    where = f"{study.path}: search"
    raw = study.search
    if not isinstance(raw, dict):
        raise BenchError(f"{where} must be a table ([search])")
    _known_keys(raw, SEARCH_KEYS, where)
    objective = raw.get("objective", OBJECTIVE)
    if objective != OBJECTIVE:
        raise BenchError(
            f"{where}.objective {objective!r} is not supported: searches maximise "
            f"{OBJECTIVE!r} (validation accuracy); the test set never chooses anything"
        )
    budgets = _table(raw.get("budgets", {}), f"{where}.budgets")
    for name in budgets:
        if name not in study.budgets:
            _unknown(f"{where}.budgets", "budget", name, study.budgets)
    own = _table(budgets.get(budget, {}), f"{where}.budgets.{budget}")
    _known_keys(own, BUDGET_KEYS, f"{where}.budgets.{budget}")
    merged = {**raw, **{k: v for k, v in own.items() if k != "space"}}
    space_raw = {
        **_table(raw.get("space", {}), f"{where}.space"),
        **_table(own.get("space", {}), f"{where}.budgets.{budget}.space"),
    }
    if not space_raw:
        raise BenchError(
            f"{where}.space is empty: name at least one setting to search, e.g. "
            'lr = { type = "float", low = 0.005, high = 0.3, log = true }'
        )
    space = _order([_param(name, spec, f"{where}.space.{name}") for name, spec in space_raw.items()], where)
    plan = Plan(
        space=space,
        trials=_count(
            trials if trials is not None else merged.get("trials", 10),
            "--trials" if trials is not None else f"{where}.trials",
        ),
        timeout=_seconds(
            timeout if timeout is not None else merged.get("timeout"),
            "--timeout" if timeout is not None else f"{where}.timeout",
        ),
        sampler=_component(merged.get("sampler", "tpe"), SAMPLERS, "sampler", where),
        pruner=_component(merged.get("pruner", "median"), PRUNERS, "pruner", where),
    )
    checks.check_against_config(plan, settings, where)
    checks.check_components(plan, settings, where)
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
            raise BenchError(
                f"{where}: a categorical parameter takes only choices, not {sorted(set(spec) - {'type', 'choices'})[0]}"
            )
        return Param(name, kind, choices=tuple(values))
    if "choices" in spec:
        raise BenchError(f'{where}: choices belong to type = "categorical", not {kind}')
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
            raise BenchError(f'{where}: ranges need by = "<categorical parameter>" to choose among them')
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
        raise BenchError(
            f"{where}: the range is empty (low = high = {low}); widen it, or fix the "
            "setting in the study's [base] instead of searching it"
        )
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
            raise BenchError(
                f"{where}.space.{param.name}: by = {param.by!r} must name a categorical parameter of the space"
            )
        if set(param.ranges) != {str(c) for c in anchor.choices}:
            raise BenchError(
                f"{where}.space.{param.name}: ranges must have exactly one entry per {param.by} choice "
                f"({', '.join(map(str, anchor.choices))}), got {', '.join(param.ranges)}"
            )
    return {p.name: p for p in sorted(params, key=lambda p: p.by is not None)}


def _component(spec: Any, known: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
    """A sampler or pruner: a name, or a table with a name and the Optuna class's options."""
    spec = {"name": spec} if isinstance(spec, str) else spec
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise BenchError(f'{where}.{kind} must be a name or a table like {{ name = "{next(iter(known))}", ... }}')
    if spec["name"] not in known:
        _unknown(f"{where}.{kind}", kind, spec["name"], known)
    accepted = set(inspect.signature(known[spec["name"]].__init__).parameters) - {"self", "search_space"}
    for option, value in spec.items():
        if option != "name" and option not in accepted:
            raise BenchError(
                f"{where}.{kind}: {spec['name']} takes no option {option!r}; it takes: "
                f"{', '.join(sorted(accepted)) or 'none'}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise BenchError(f"{where}.{kind}: {option} = {value} is not a finite number; give one")
    return dict(spec)


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
