"""Studies are data: studies/NAME.toml names variants, seeds, a dataset and budgets.

A variant is a set of RunConfig settings over the study's [base]; a budget is another set
(smoke for tests, cpu for a laptop, full for a GPU) plus its seeds. Every study has the budgets of
studies/_defaults.toml (the shared smoke budget) except those it writes itself: its own table of
that name replaces the shared one whole. Settings stack as
base < budget < variant < command-line overrides (except that a variant's "none" stays none),
and the budget's name together with any override becomes the runs' `budget` label, so runs of
different sizes never mix in a report.
A study may also hold a [search] table (see bench.search); adding a study needs no code.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import RunConfig
from bench.errors import BenchError, choices
from bench.provenance import PROJECT_ROOT
from bench.run import study_comparisons

STUDIES_DIR = PROJECT_ROOT / "studies"
SHARED_FILE = "_defaults.toml"  # in STUDIES_DIR: [budgets.NAME] tables that every study inherits
TOP_KEYS = {
    "name",
    "description",
    "reference",
    "default_budget",
    "target_val_acc_pct",
    "base",
    "variants",
    "budgets",
    "search",
    "comparisons",
}
# target_val_acc_pct: the validation accuracy (%) whose first reach the report times (time to accuracy);
# a budget's own value wins over the study's, since budgets differ in data and size.
BUDGET_KEYS = {"description", "seeds", "target_val_acc_pct", "needs"}


@dataclass(frozen=True)
class Budget:
    name: str
    description: str
    settings: dict[str, Any]
    seeds: tuple[int, ...]
    target_val_acc_pct: float | None = None
    needs: str = ""  # what a person must supply on the command line (e.g. --dataset imagefolder:PATH)

    def check_needs(self, overrides: dict[str, Any]) -> None:
        """A budget that needs a setting (`needs` names it as a flag) refuses to run without it."""
        flag = self.needs.split()[0] if self.needs else ""
        if flag.startswith("--") and flag[2:].replace("-", "_") not in overrides:
            raise BenchError(f"budget {self.name!r} needs {self.needs}")


@dataclass(frozen=True)
class Point:
    """One run of a study: a variant at a seed, and the full config it trains."""

    variant: str
    seed: int
    config: RunConfig

    @property
    def key(self) -> str:
        return f"{self.variant} seed={self.seed}"


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    path: Path
    reference: str | None  # the variant every other is compared against in reports
    default_budget: str
    base: dict[str, Any]
    variants: dict[str, dict[str, Any]]
    budgets: dict[str, Budget]
    search: dict[str, Any] | None  # validated by bench.search
    target_val_acc_pct: float | None = None
    # [comparisons]: (variant, against) pairs the report tests, Holm over them; None: each variant
    # against the reference
    comparisons: tuple[tuple[str, str], ...] | None = None

    def pairs(self) -> list[tuple[str, str]]:
        """What the report compares: the named comparisons, or each variant against the reference."""
        if self.comparisons is not None:
            return list(self.comparisons)
        if self.reference is None:
            return []
        return [(v, self.reference) for v in self.variants if v != self.reference]

    def target_val_acc_pct_for(self, label: str) -> float | None:
        """The time-to-accuracy target of a budget label (its name, maybe with '+overrides')."""
        budget = self.budgets.get(label.split("+", 1)[0])
        if budget is not None and budget.target_val_acc_pct is not None:
            return budget.target_val_acc_pct
        return self.target_val_acc_pct

    def budget(self, name: str | None) -> Budget:
        name = name or self.default_budget
        if name not in self.budgets:
            choices(f"budget for study {self.name!r}", name, self.budgets)
        return self.budgets[name]

    def settings(self, budget: str | None, overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
        """The settings every run of this budget shares, and the budget label naming them."""
        chosen = self.budget(budget)
        overrides = dict(overrides or {})
        label = chosen.name
        if overrides:
            label += "+" + ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
        return {**self.base, **chosen.settings}, label

    def grid(
        self,
        budget: str | None = None,
        overrides: dict[str, Any] | None = None,
        seeds: tuple[int, ...] | None = None,
        variants: list[str] | None = None,
        flops_per_image: Callable[[RunConfig], float] | None = None,
    ) -> list[Point]:
        """Every variant at every seed. Under compute = 'flops', `flops_per_image` (a model's forward
        FLOPs on one image of the data it trains on) sets each variant's compute_scale."""
        chosen = self.budget(budget)
        for name in variants or []:
            if name not in self.variants:
                choices(f"variant of study {self.name!r}", name, self.variants)
        points = []
        for variant in self.variants:
            if variants and variant not in variants:
                continue
            for seed in seeds if seeds is not None else chosen.seeds:
                points.append(Point(variant, seed, self._config_of(variant, seed, budget, overrides)))
        if points and points[0].config.compute == "flops":
            points = self._equal_flops(points, budget, overrides, flops_per_image)
        return points

    def _config_of(self, variant: str, seed: int, budget: str | None, overrides: dict[str, Any] | None) -> RunConfig:
        shared, label = self.settings(budget, overrides)
        settings = self.variants[variant]
        # A variant that switches a setting off ("none": transfer's scratch has no pretrained
        # file) keeps it off: an override fills what the variants leave open.
        pinned = {k: v for k, v in settings.items() if str(v).lower() == "none"}
        values = {**shared, **settings, **(overrides or {}), **pinned, "seed": seed, "budget": label}
        return _config(self, f"variant {variant!r}", values)

    def _equal_flops(
        self,
        points: list[Point],
        budget: str | None,
        overrides: dict[str, Any] | None,
        flops_per_image: Callable[[RunConfig], float] | None,
    ) -> list[Point]:
        """Each point with the training FLOPs of the reference variant at the same epochs: a model with
        half the reference's FLOPs per image trains twice the steps (its schedule stretched to match)."""
        if self.reference is None:
            raise BenchError(
                f"{self.path}: compute = 'flops' gives every variant the training FLOPs of the "
                'reference variant, but the study names none: add reference = "VARIANT"'
            )
        if flops_per_image is None:
            raise ValueError("compute = 'flops' needs the models' FLOPs per image (flops_per_image)")
        reference = flops_per_image(self._config_of(self.reference, 0, budget, overrides))
        scales: dict[str, float] = {}
        for p in points:
            if p.variant not in scales:
                scales[p.variant] = reference / flops_per_image(p.config)
        return [Point(p.variant, p.seed, p.config.replace(compute_scale=scales[p.variant])) for p in points]


def names() -> list[str]:
    return sorted(p.stem for p in STUDIES_DIR.glob("*.toml") if not p.name.startswith("_"))


def load(name: str) -> Study:
    """A study by name (studies/NAME.toml) or by the path of a TOML file."""
    path = Path(name)
    if path.suffix != ".toml":
        path = STUDIES_DIR / f"{name}.toml"
        if name not in names():
            choices("study", name, names())
    elif not path.is_file():
        raise BenchError(f"study file {path} does not exist")
    return parse(_read(path), path)


def shared_budgets() -> dict[str, Budget]:
    """The budgets every study inherits (studies/_defaults.toml; none without the file)."""
    path = STUDIES_DIR / SHARED_FILE
    if not path.is_file():
        return {}
    raw = _read(path)
    unknown = set(raw) - {"budgets"}
    if unknown:
        raise BenchError(f"{path}: unknown key {sorted(unknown)[0]!r}; it holds only [budgets.NAME] tables")
    return {name: _budget(name, table, str(path)) for name, table in _table(raw, "budgets", str(path)).items()}


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise BenchError(f"{path}: not UTF-8 text (byte {exc.start}): save the study file as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"{path}: malformed TOML: {exc}") from None


def load_all() -> tuple[list[Study], list[str]]:
    """Every study in studies/ that loads, and one line for each file that does not.

    For listings: one broken file must not hide the others.
    """
    good, bad = [], []
    for name in names():
        try:
            good.append(load(name))
        except BenchError as exc:
            if str(exc) not in bad:  # a broken shared file breaks every study: say it once
                bad.append(str(exc))
    return good, bad


def parse(raw: dict[str, Any], path: Path) -> Study:
    where = str(path)
    unknown = set(raw) - TOP_KEYS
    if unknown:
        raise BenchError(f"{where}: unknown key {sorted(unknown)[0]!r}; valid keys: {', '.join(sorted(TOP_KEYS))}")
    base = _table(raw, "base", where)
    variants = _table(raw, "variants", where)
    budgets_raw = _table(raw, "budgets", where)
    if not variants and "search" not in raw:
        raise BenchError(f"{where}: a study needs a [variants] table (or a [search] table)")
    if not budgets_raw:
        raise BenchError(f"{where}: a study needs at least one budget of its own, e.g. [budgets.cpu]")
    check_names(str(raw.get("name", path.stem)), variants, budgets_raw, where)
    budgets = {name: _budget(name, table, where) for name, table in budgets_raw.items()}
    inherited = {name: budget for name, budget in shared_budgets().items() if name not in budgets}
    budgets.update(inherited)
    for name, settings in variants.items():
        if not isinstance(settings, dict):
            raise BenchError(f'{where}: variants.{name} must be a table of settings, e.g. {{ model = "vgg-a" }}')
    default_budget = raw.get("default_budget", next(iter(budgets)))
    if default_budget not in budgets:
        raise BenchError(f"{where}: default_budget {default_budget!r} is not one of its budgets: {', '.join(budgets)}")
    reference = raw.get("reference")
    if reference is not None and reference not in variants:
        raise BenchError(f"{where}: reference {reference!r} is not one of its variants: {', '.join(variants)}")
    study = Study(
        name=str(raw.get("name", path.stem)),
        description=str(raw.get("description", "")),
        path=path,
        reference=reference,
        default_budget=default_budget,
        base=base,
        variants=variants,
        budgets=budgets,
        search=raw.get("search"),
        target_val_acc_pct=percent(raw.get("target_val_acc_pct"), f"{where}: target_val_acc_pct"),
        comparisons=study_comparisons.parse(raw.get("comparisons"), list(variants), where),
    )
    for budget in budgets.values():  # catch a bad setting now, not hours into a study
        what = f"budget {budget.name!r}"
        if budget.name in inherited:
            what += f" (shared: {STUDIES_DIR / SHARED_FILE})"
        for variant, settings in variants.items():
            _config(study, f"{what}, variant {variant!r}", {**base, **budget.settings, **settings})
        if not variants:
            _config(study, what, {**base, **budget.settings})
    return study


# A study's, variant's and budget's names become folders (reports/, checkpoints), MLflow experiments and
# registered models: letters, digits and . _ + - only, so none can climb out of a folder or name one.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")


def check_names(study: str, variants: dict[str, Any], budgets: dict[str, Any], where: str) -> None:
    """Refuse, in one line, a name that would become a path (`../x`, `/abs`, `a/b`) or escape a name."""
    named = [("name", study)] + [("variant", v) for v in variants] + [("budget", b) for b in budgets]
    for what, value in named:
        if not _NAME.fullmatch(value):
            raise BenchError(
                f"{where}: {what} {value!r} would become a path, an MLflow experiment and a "
                "model name: use letters, digits and . _ + - (at most 100, no separator), "
                "e.g. 'my-study'"
            )


def _budget(name: str, table: Any, where: str) -> Budget:
    if not isinstance(table, dict):
        raise BenchError(f"{where}: budgets.{name} must be a table")
    settings = {k: v for k, v in table.items() if k not in BUDGET_KEYS}
    return Budget(
        name,
        str(table.get("description", "")),
        settings,
        _seeds(table.get("seeds", [0]), f"{where}: budgets.{name}.seeds"),
        percent(table.get("target_val_acc_pct"), f"{where}: budgets.{name}.target_val_acc_pct"),
        str(table.get("needs", "")),
    )


def parse_seeds(text: str) -> tuple[int, ...]:
    """'3' means seeds 0, 1, 2; '0,5,7' means exactly those."""
    try:
        if "," in text:
            return _seeds([int(s) for s in text.split(",") if s.strip()], "--seeds")
        return _seeds(int(text), "--seeds")
    except ValueError:
        raise BenchError(f"--seeds takes a count (3) or a list (0,5,7), not {text!r}") from None


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise BenchError(f"{where}: a seed count must be at least 1, got {value}")
        return tuple(range(value))
    if (
        isinstance(value, list)
        and value
        and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
    ):
        if len(set(value)) != len(value):
            raise BenchError(f"{where}: seeds repeat: {value}")
        return tuple(value)
    raise BenchError(f"{where}: seeds must be a count or a non-empty list of non-negative integers, got {value!r}")


def percent(value: Any, where: str) -> float | None:
    """An accuracy in percent, (0, 100]; None stays None."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or not 0 < number <= 100:
        raise BenchError(f"{where}: a validation accuracy target is a percentage in (0, 100], got {value!r}")
    return number


def _table(raw: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise BenchError(f"{where}: {key} must be a table ([{key}])")
    return value


def _config(study: Study, what: str, values: dict[str, Any]) -> RunConfig:
    try:
        return RunConfig.from_dict(values)
    except BenchError as exc:
        raise BenchError(f"{study.path}: {what}: {exc}") from None
