"""Search-space YAML + command-line overrides -> one validated, frozen SweepConfig.

Everything a user can get wrong is caught here, before Ray starts, as a ConfigError that names
the field (`search.temperature: ...`). Searched values are checked by validating the trial
config at every extreme of every domain, so the trial's own rules (T > 0, alpha in [0, 1] for
kd, ...) are the single source of truth.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdsweep.data import DataSpec, check_dataset_name
from kdsweep.errors import ConfigError, did_you_mean, from_validation_error, unknown_name
from kdsweep.losses import LossParams, needs_teacher
from kdsweep.models import require_model
from kdsweep.plugins import import_plugins
from kdsweep.schedulers import scheduler_entry
from kdsweep.searchers import list_searchers, searcher_entry
from kdsweep.teachers import TeacherSpec
from kdsweep.trial import TrialConfig, reported_metrics

# The shipped search spaces are package data (kdsweep/search_spaces/*.yaml): `--space cifar10` names one.
SPACES_DIR = Path(str(resources.files("kdsweep") / "search_spaces"))
DEFAULT_SPACE = SPACES_DIR / "default.yaml"
DOMAINS = ("choice", "grid", "uniform", "loguniform", "randint")
# Trial fields a search space must not set: the sweep owns them ("data" has its own section).
SWEEP_OWNED = {"data", "epochs", "num_threads"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Param(_Strict):
    """One searched parameter in Ray Tune's vocabulary; `when` makes it conditional."""

    choice: list[Any] | None = None
    grid: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None  # [low, high): high excluded, as in tune.randint
    when: dict[str, Any] | None = None  # e.g. {loss: dkd}: sampled only then; the trial default otherwise

    @model_validator(mode="after")
    def _one_domain(self) -> Param:
        given = [d for d in DOMAINS if getattr(self, d) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(DOMAINS)} (got {', '.join(given) or 'none'})")
        values = self.values
        if not values:
            raise ValueError(f"'{self.domain}' needs at least one value")
        if self.domain == "grid" and self.when:
            # A grid multiplies the trials by its values; a conditional one would have to mean "only on
            # some of them", which Tune's grid cannot say.
            raise ValueError("a grid cannot be conditional (when:): use choice, or make the grid unconditional")
        if self.domain in ("uniform", "loguniform", "randint"):
            low, high = values
            if not low < high:
                raise ValueError(f"{self.domain} needs low < high, got [{low}, {high}]")
            if self.domain == "loguniform" and low <= 0:
                raise ValueError("loguniform needs low > 0")
        return self

    @property
    def domain(self) -> str:
        return next(d for d in DOMAINS if getattr(self, d) is not None)

    @property
    def values(self) -> list[Any]:
        return list(getattr(self, self.domain))

    def extremes(self) -> list[Any]:
        """The values that bound what can be sampled: enough to validate the whole domain."""
        if self.domain == "randint":
            return [self.randint[0], self.randint[1] - 1]
        return self.values

    def condition_holds(self, config: dict[str, Any]) -> bool:
        if not self.when:
            return True
        for key, expected in self.when.items():
            allowed = expected if isinstance(expected, list) else [expected]
            if config.get(key) not in allowed:
                return False
        return True


class Objective(_Strict):
    metric: str = "val_accuracy"
    mode: Literal["max", "min"] = "max"


class Budget(_Strict):
    epochs: int = Field(default=8, gt=0)
    num_samples: int = Field(default=8, gt=0)


class Confirm(_Strict):
    """After the search, the `top` best configurations (distilled or scratch) run again until each has `seeds`
    seeds in all (its search trial's counting as one), with the scratch baselines of their students
    (kdsweep/sweep/confirm.py); either at 0 turns it off."""

    top: int = Field(default=3, ge=0)
    seeds: int = Field(default=3, ge=0)


class Deploy(_Strict):
    """The deployment target and its budget: where the shipped student must run, and what it may cost there.

    Params and FLOPs depend only on a trial's configuration, latency only on its student's architecture and
    input shape (measured once, in `runtime` on `threads` threads, at `precision`): a configuration over any
    limit is INFEASIBLE and never trains. None: no limit.
    """

    runtime: Literal["onnxruntime", "torch"] = "onnxruntime"
    threads: int = Field(default=1, gt=0)
    precision: Literal["fp32", "int8"] = "fp32"
    max_latency_ms: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_params: int | None = Field(default=None, gt=0)
    max_flops: int | None = Field(default=None, gt=0)

    @property
    def has_budget(self) -> bool:
        return any(v is not None for v in (self.max_latency_ms, self.max_params, self.max_flops))


class Scheduler(_Strict):
    name: str = "asha"  # a registered scheduler (kdsweep/schedulers.py)
    grace_period: int = Field(default=2, gt=0)
    reduction_factor: float = Field(default=2.0, gt=1)

    @field_validator("name")
    @classmethod
    def _registered(cls, value: str) -> str:
        scheduler_entry(value)
        return value


class Searcher(_Strict):
    name: str = "random"  # a registered searcher (kdsweep/searchers.py)
    max_concurrent: int | None = Field(default=None, gt=0)  # default: as many as resources allow
    seed: int | None = 0

    @field_validator("name")
    @classmethod
    def _registered(cls, value: str) -> str:
        searcher_entry(value)
        return value


class Resources(_Strict):
    cpus_per_trial: float = Field(default=1.0, gt=0)
    gpus_per_trial: float = Field(default=0.0, ge=0)
    max_failures: int = Field(default=2, ge=0)

    @field_validator("gpus_per_trial")
    @classmethod
    def _whole_or_fraction(cls, value: float) -> float:
        if value > 1 and value != int(value):
            raise ValueError("must be a fraction of one GPU (<= 1) or a whole number of GPUs")
        return value


class Run(_Strict):
    """Where and as what the sweep runs; usually set by flags rather than in the file."""

    name: str | None = None  # experiment name; default: the space file's stem
    address: str | None = None  # join a running Ray cluster ("auto" on a `ray up` head node)
    storage: str | None = None  # Tune storage (a shared path or URI for multi-node)
    tracking_uri: str | None = None  # MLflow; default: MLFLOW_TRACKING_URI, else a local store
    output_json: str | None = None
    resume: bool = False
    select: bool = True  # choose, test and register the champion at the end
    # Train each distinct student once without the teacher too (reused from earlier sweeps of the
    # experiment), so that every distillation trial reports kd_gain and gap_closed.
    baselines: bool = True
    register_name: str | None = None  # registered model name for the champion; default: the experiment name
    # Only distilled students compete for champion (by default the scratch baselines do too).
    distilled_only: bool = False
    # How long the driver waits at the sweep's end for an unreachable tracking server, to store what
    # trials could not, before giving up on it (named in the leaderboard, with how to store it later).
    # A trial waits at its end only while the server answers: it never trains slower for one that doesn't.
    tracking_patience_s: float = Field(default=300.0, ge=0)

    @field_validator("name", "register_name")
    @classmethod
    def _no_path_separators(cls, value: str | None) -> str | None:
        # The experiment name is a folder of the storage and, by default, the registered model's name,
        # which MLflow refuses with '/' or ':' (only once the sweep has run, at selection).
        if value is not None and ("/" in value or ":" in value):
            raise ValueError(f"'{value}' may not contain '/' or ':' (it names a folder and a registered model)")
        return value


class SweepConfig(_Strict):
    data: DataSpec = DataSpec()
    teacher: TeacherSpec = TeacherSpec()
    # Several teachers, by name: `teacher` is then a trial parameter, searched (or fixed) like `student`.
    teachers: dict[str, TeacherSpec] = {}
    objective: Objective | list[Objective] = Objective()
    budget: Budget = Budget()
    confirm: Confirm = Confirm()
    deploy: Deploy = Deploy()
    scheduler: Scheduler = Scheduler()
    searcher: Searcher = Searcher()
    resources: Resources = Resources()
    fixed: dict[str, Any] = {}
    search: dict[str, Param] = {}
    run: Run = Run()
    plugins: list[
        str
    ] = []  # modules that register your own models or datasets, imported on the driver and in every trial
    space_file: str | None = None  # filled in by load_config: recorded with the sweep

    @property
    def objectives(self) -> list[Objective]:
        return self.objective if isinstance(self.objective, list) else [self.objective]

    @property
    def experiment_name(self) -> str:
        return self.run.name or (Path(self.space_file).stem if self.space_file else "kdsweep")

    @property
    def teacher_specs(self) -> dict[str, TeacherSpec]:
        """Every teacher of the sweep by name: those of `teachers:`, else the one `teacher:`, named by its arch."""
        return dict(self.teachers) or {self.teacher.arch: self.teacher}

    def trial_base(self) -> dict[str, Any]:
        """The fixed part of every trial's config (searched keys are added per trial); a sweep's only
        teacher is every trial's."""
        base = {**self.fixed, "epochs": self.budget.epochs}
        if "teacher" not in self.search and len(self.teacher_specs) == 1:
            base.setdefault("teacher", next(iter(self.teacher_specs)))
        return base


# ---------------------------------------------------------------- loading


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None, **flags: Any) -> SweepConfig:
    """Read the YAML (a path, or the name of a shipped space), apply `--set key=value` overrides then flags
    (both by dotted path), validate."""
    path = space_file(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(str(path), f"not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(str(path), "must be a mapping of sections (data, teacher, search, ...)")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", f"'{item}' is not key=value")
        _set_path(raw, key, yaml.safe_load(value) if value else None)
    for key, value in flags.items():
        if value is not None:
            _set_path(raw, key, value)
    raw["space_file"] = str(path)
    import_plugins(raw.get("plugins") or [])  # before validation: the space may name what they register
    try:
        config = SweepConfig.model_validate(raw)
    except ValidationError as error:
        raise from_validation_error(error) from None
    validate_semantics(config)
    return config


def shipped_spaces() -> list[str]:
    """The names of the search spaces that ship with kdsweep (`--space NAME`)."""
    return sorted(path.stem for path in SPACES_DIR.glob("*.yaml"))


def space_file(space: str | os.PathLike | None) -> Path:
    """`--space` as a file: the default space, a YAML file that exists, or a shipped space by name."""
    if not space:
        return DEFAULT_SPACE
    path = Path(space)
    if path.is_file():
        return path
    names = shipped_spaces()
    if path.name == str(space) and path.stem in names and path.suffix in ("", ".yaml"):
        return SPACES_DIR / f"{path.stem}.yaml"
    if path.name == str(space) and not path.suffix:  # a name, not a path
        raise ConfigError("--space", unknown_name("search space", str(space), names, "a path to a YAML file"))
    raise ConfigError(
        "--space", f"file '{path}' does not exist{did_you_mean(path.stem, names)} (shipped: {', '.join(names)})"
    )


def _set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(dotted, f"'{part}' is not a section")
        node = child
    node[parts[-1]] = value


def validate_semantics(config: SweepConfig) -> None:
    """What pydantic's types cannot say: names exist, domains fit the trial, the combination works."""
    check_dataset_name(config.data.name)
    _validate_teachers(config)
    trial_fields = set(TrialConfig.model_fields)
    for section, keys in (("fixed", config.fixed), ("search", config.search)):
        for key in keys:
            if key in SWEEP_OWNED:
                raise ConfigError(
                    f"{section}.{key}",
                    "is set by the sweep (use the data: section, budget.epochs, resources.cpus_per_trial)",
                )
            if key not in trial_fields:
                raise ConfigError(
                    f"{section}.{key}",
                    f"unknown trial parameter (known: {', '.join(sorted(trial_fields - SWEEP_OWNED))})",
                )
    for key in config.search.keys() & config.fixed.keys():
        raise ConfigError(f"search.{key}", "is also in fixed: give it in one place")
    _validate_trial_values(config)
    _validate_conditions(config)
    _validate_strategy(config)
    for name, spec in config.teacher_specs.items():
        if spec.mode == "off" and any_trial_needs_teacher(config):
            raise ConfigError(
                f"teachers.{name}.mode" if config.teachers else "teacher.mode",
                "off but alpha can be > 0 (or the loss is not kd): search only alpha=0 with loss kd, "
                "or use cached/online",
            )
    _validate_objectives(config)
    _validate_precision(config)
    if config.run.distilled_only and not any_trial_needs_teacher(config):
        raise ConfigError("run.distilled_only", "--distilled-only, but no trial of this space distils (alpha is 0)")


def _validate_teachers(config: SweepConfig) -> None:
    """One `teacher:`, or several `teachers:` that trials choose from by name (search or fixed)."""
    if config.teachers and "teacher" in config.model_fields_set:
        raise ConfigError("teachers", "give one teacher (teacher:) or several by name (teachers:), not both")
    for name, spec in config.teacher_specs.items():
        require_model(f"teachers.{name}.arch" if config.teachers else "teacher.arch", spec.arch)
    names = list(config.teacher_specs)
    chosen = config.search.get("teacher")
    if chosen is None and "teacher" not in config.fixed:
        if len(names) > 1:
            raise ConfigError(
                "search.teacher", f"{len(names)} teachers: search over them (teacher: {{choice: {names}}}) or fix one"
            )
        return
    if not config.teachers:
        raise ConfigError(
            "search.teacher" if chosen else "fixed.teacher", "name the teachers to choose from under teachers: first"
        )
    values = chosen.values if chosen is not None else [config.fixed["teacher"]]
    if chosen is not None and chosen.domain not in ("choice", "grid"):
        raise ConfigError("search.teacher", "is a name: search it with choice or grid")
    for value in values:
        if value not in names:
            raise ConfigError("search.teacher" if chosen else "fixed.teacher", unknown_name("teacher", value, names))


def _distils(config: SweepConfig) -> list[bool]:
    """For each searched loss and bound of alpha: whether such a trial distils (alpha > 0, or a loss other than kd)."""
    base = TrialConfig.model_validate(config.trial_base())
    alphas = config.search["alpha"].values if "alpha" in config.search else [base.alpha]
    losses = config.search["loss"].values if "loss" in config.search else [base.loss]
    return [needs_teacher(loss, LossParams(base.temperature, alpha)) for loss in losses for alpha in alphas]


def latency_measured(config: SweepConfig) -> list[bool]:
    """measure_latency as the space's trials can have it: its searched values, else the fixed one (or the default)."""
    if "measure_latency" in config.search:
        return config.search["measure_latency"].values
    return [TrialConfig.model_validate(config.trial_base()).measure_latency]


def any_trial_needs_teacher(config: SweepConfig) -> bool:
    """Whether some sampled trial distils (alpha > 0, or a loss other than kd), so the sweep must prepare a teacher."""
    return any(_distils(config))


def pretrained_students(config: SweepConfig) -> list[tuple[str, str, str | bool]]:
    """(field, student, weights) for every student that some trial starts from pretrained weights: each
    searched student with each searched or fixed `pretrained` (a `when: {student: ...}` on it respected)."""
    base = config.trial_base()
    student = config.search.get("student")
    students = student.values if student else [base.get("student", TrialConfig.model_fields["student"].default)]
    if "pretrained" not in config.search:
        return [("fixed.pretrained", name, base["pretrained"]) for name in students if base.get("pretrained")]
    searched = config.search["pretrained"]
    only = (searched.when or {}).get("student", students)
    only = only if isinstance(only, list) else [only]
    return [
        ("search.pretrained", name, weights)
        for name in students
        if name in only
        for weights in searched.values
        if weights
    ]


def _validate_objectives(config: SweepConfig) -> None:
    """Every objective is a metric every trial reports: Tune fails a trial whose report lacks it."""
    everywhere = reported_metrics(distils=all(_distils(config)), measures_cost=all(latency_measured(config)))
    somewhere = reported_metrics(distils=True, measures_cost=True)
    for index, objective in enumerate(config.objectives):
        metric = objective.metric
        if metric in everywhere:
            continue
        field = f"objective.{index}.metric" if isinstance(config.objective, list) else "objective.metric"
        if metric.startswith("test_"):
            raise ConfigError(
                field, f"'{metric}': trials are compared on the validation split, never the test split (use val_...)"
            )
        if metric in somewhere:
            if metric not in reported_metrics(distils=False, measures_cost=True):
                why = "only by trials that distil (alpha > 0, or a loss other than kd), and some trials here do not"
            else:
                why = "only with measure_latency: true, and some trials here do not measure it"
            raise ConfigError(field, f"'{metric}' is reported {why}")
        raise ConfigError(field, unknown_name("metric", metric, list(somewhere)))


def _validate_precision(config: SweepConfig) -> None:
    """int8 is ONNX Runtime's static quantization (kdsweep.sweep.int8_stage): it runs there, and it
    measures accuracy and latency only, so selection can rank on its figures only by val_accuracy."""
    if config.deploy.precision != "int8":
        return
    if config.deploy.runtime != "onnxruntime":
        raise ConfigError(
            "deploy.runtime",
            f"{config.deploy.runtime} cannot run the int8 students (ONNX Runtime's static int8 QDQ models): "
            "use onnxruntime, or precision fp32",
        )
    metric = config.objectives[0].metric
    if metric != "val_accuracy":
        raise ConfigError(
            "deploy.precision",
            f"int8 students are measured on val_accuracy and latency, and the objective is '{metric}': "
            "rank by val_accuracy, or use precision fp32",
        )


def _validate_trial_values(config: SweepConfig) -> None:
    base = config.trial_base()  # searched keys keep the trial's defaults while one is varied
    if "student" in config.fixed:
        require_model("fixed.student", config.fixed["student"])
    try:
        TrialConfig.model_validate(base)
    except ValidationError as error:
        raise from_validation_error(error, "fixed.") from None
    default_loss = base.get("loss", TrialConfig.model_fields["loss"].default)
    # alpha's range depends on the loss (kd: a weight in [0, 1]): check its bounds with every loss
    losses = config.search["loss"].values if "loss" in config.search else [default_loss]
    for name, param in config.search.items():
        for value in param.extremes():
            if name == "student":
                require_model("search.student", value)
            for loss in losses if name == "alpha" else [default_loss]:
                _check_trial({**base, "loss": loss, name: value}, f"search.{name}")


def _check_trial(candidate: dict[str, Any], field: str) -> None:
    try:
        TrialConfig.model_validate(candidate)
    except ValidationError as error:
        problem = from_validation_error(error)
        raise ConfigError(
            field, f"{problem.field}: {problem.problem}" if problem.field not in field else problem.problem
        ) from None


def _validate_conditions(config: SweepConfig) -> None:
    for name, param in config.search.items():
        for key, expected in (param.when or {}).items():
            if key not in config.search:
                raise ConfigError(f"search.{name}.when", f"'{key}' is not a searched parameter")
            if config.search[key].when:
                raise ConfigError(f"search.{name}.when", f"'{key}' is itself conditional: one level only")
            allowed = expected if isinstance(expected, list) else [expected]
            missing = [v for v in allowed if v not in config.search[key].values]
            if missing:
                raise ConfigError(f"search.{name}.when", f"{key} never takes {missing}")


def _validate_strategy(config: SweepConfig) -> None:
    """The scheduler and searcher can do what the space asks of them: what each supports is declared by
    its registry entry (kdsweep/schedulers.py, kdsweep/searchers.py), never by its name here."""
    searcher = searcher_entry(config.searcher.name)
    if not searcher.grid and any(p.domain == "grid" for p in config.search.values()):
        raise ConfigError("searcher.name", f"{config.searcher.name} cannot search a 'grid' domain: use choice")
    if len(config.objectives) > 1 and not searcher.multi_objective:
        names = ", ".join(list_searchers(multi_objective=True))
        raise ConfigError(
            "objective", f"several objectives need a searcher that supports them (searcher.name: {names})"
        )
    scheduler = scheduler_entry(config.scheduler.name)
    if scheduler.grace_period and config.scheduler.grace_period > config.budget.epochs:
        raise ConfigError(
            "scheduler.grace_period", f"{config.scheduler.grace_period} exceeds budget.epochs ({config.budget.epochs})"
        )
    if scheduler.synchronous and searcher.adaptive:
        raise ConfigError(
            "scheduler.name",
            f"{config.scheduler.name} fills its brackets with the trials created at once, and {config.searcher.name} "
            f"creates them one by one: use searcher.name: {', '.join(list_searchers(adaptive=False))}",
        )
    if scheduler.synchronous and config.searcher.max_concurrent:
        raise ConfigError(
            "searcher.max_concurrent",
            f"{config.scheduler.name} fills its brackets with the trials created at once, and max_concurrent creates "
            "them a few at a time: leave it unset (resources.cpus_per_trial bounds how many run at once)",
        )
