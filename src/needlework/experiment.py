"""`needlework run RECIPE`: the paper's whole experiment as one resumable command.

generate every dataset -> finetune every variant x seed -> evaluate the base model and every
finetuned model on the recipe's benchmarks -> report. Each step is skipped when its outputs exist
(``manifest.json``, ``model.json``, every benchmark's ``metrics.json``), so an interrupted
experiment picks up where it stopped; a half-finished evaluation resumes sample by sample.

Loading a recipe loads every config it names once, as typed objects, and checks every reference
between them (datasets, seeds, files a step reads, fields the recipe owns); each step's config is
derived from those objects with ``dataclasses.replace``. Whether local data is present is checked
by the step that reads it.

Run:  needlework run configs/recipes/tiny_cpu.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from needlework.config import (
    Distinct,
    Seed,
    apply_overrides,
    config,
    config_class,
    config_kind,
    invalid,
    load_config,
    parse_override,
    read_yaml,
    set_field,
    to_dict,
)
from needlework.errors import ConfigError, UserError
from needlework.models.base import ChatModel
from needlework.registry import backends, benchmarks


def _inside(path: str) -> str:
    if Path(path).is_absolute():
        raise ValueError(
            f"{path} is an absolute path; give a path inside the experiment folder, relative "
            "to out_dir"
        )
    return path


def _folder_name(name: str) -> str:
    if name == "base" or "/" in name:
        raise ValueError(f"'{name}' is reserved or not a folder name")
    return name


Inside = Annotated[str, AfterValidator(_inside)]
"""A path inside the experiment folder, relative to ``out_dir``."""


@config
class DatasetSpec:
    """A dataset to generate: a generate config and overrides (the recipe sets ``out_dir``)."""

    config: Path
    """A ``needlework generate`` config file."""
    overrides: list[str] = field(default_factory=list)
    """``key=value`` overrides applied to that config."""
    match_tokens: str | None = None
    """Another dataset of the recipe (listed before this one) whose training tokens this one
    matches: its ``num_train`` becomes as many samples as reach that count (equal-token
    baselines, as the paper compares them); the manifest records target and reached counts."""
    match_count: Literal["answer", "total"] = "total"
    """What is matched: ``total`` conversation tokens (the paper's "training tokens"), or
    ``answer`` tokens (what answer-only loss sees)."""


@config
class VariantSpec:
    """One finetuning setup, trained once per seed on that seed's dataset."""

    name: Annotated[str, AfterValidator(_folder_name)]
    """Variant label in folders and reports, e.g. ``ft_template``."""
    train_config: Path
    """A ``needlework train`` config file."""
    dataset: str
    """Key into the recipe's ``datasets``; seed S trains on ``seed<S>/<train_file>``."""
    seeds: Annotated[list[Seed], Field(min_length=1), Distinct] = field(default_factory=lambda: [0])
    """Seeds: each gets its own dataset seed, training seed and evaluation."""
    overrides: list[str] = field(default_factory=list)
    """``key=value`` overrides for the train config."""
    train_file: str = "train.jsonl"
    """File of the dataset's ``seed<S>/`` folder to train on (``train.openai.jsonl`` for the
    OpenAI backend)."""
    paths: dict[str, Inside] = field(default_factory=dict)
    """Train-config fields set to paths inside the experiment folder, each given relative to
    ``out_dir``: ``mix_path: data/chat/seed0/train.jsonl``."""


@config
class EvalVariant:
    """A model of the recipe evaluated with some of its settings changed, without training
    (e.g. a training-free position fix, alone or on a finetuned variant)."""

    name: Annotated[str, AfterValidator(_folder_name)]
    """Variant label in folders and reports, e.g. ``calibrated``."""
    model: dict[str, Any]
    """Model (backend) fields to change: ``{position_fix: {name: attn_calibration}}``."""
    of: str = "base"
    """``base``, or a finetuned variant's name: then each of its seeds is evaluated so."""


# Fields of each step's config that the recipe sets itself (a recipe setting one is refused).
OWNED = {
    "generate": ("out_dir",),
    "train": ("train_path", "out_dir", "seed", "variant"),
    "eval": ("model", "out_dir", "variant", "seed"),
}


@config
class RecipeConfig:
    """An experiment: datasets, the base model, finetuned variants, one eval config, a report."""

    out_dir: Path
    """Experiment folder: data/, train/<variant>/seed<S>/, eval/<variant>/..., report/."""
    base_model: Annotated[ChatModel, backends]
    """The untrained model (an inference backend); finetuned models inherit its settings."""
    variants: list[VariantSpec]
    """Finetuning variants (may be empty: evaluate the base model only)."""
    eval_config: Path
    """A ``needlework eval`` config; its ``model`` and ``out_dir`` are set per model."""
    datasets: dict[str, DatasetSpec] = field(default_factory=dict)
    """Datasets by name; each is generated into ``out_dir/data/<name>/``."""
    eval_paths: dict[str, Inside | list[Inside]] = field(default_factory=dict)
    """Eval-config fields set to paths inside the experiment folder, each given relative to
    ``out_dir``: ``benchmarks.kv_retrieval.data_path: data/kv/seed0/eval.jsonl``; a list sets
    a list of paths."""
    held_out: list[str] = field(default_factory=list)
    """Datasets of the recipe whose training questions no evaluation may ask: every benchmark
    that can exclude questions (its ``held_out`` field: MDQA, the general suite's NQ-Open and
    TriviaQA) gets their folders."""
    eval_overrides: list[str] = field(default_factory=list)
    """``key=value`` overrides for the eval config."""
    evaluate_base: bool = True
    """Also evaluate the untrained base model (the "before" of every comparison)."""
    eval_variants: list[EvalVariant] = field(default_factory=list)
    """Models evaluated with changed settings and no training (position fixes; a fix on the
    best finetuned variant), each compared like any variant."""
    report: bool = True
    """Write ``report/`` at the end."""
    tiny_base: str | None = None
    """CPU demos/tests: build this tiny random model (``tiny:llama-h128-l2-a4``) at
    ``out_dir/base_model`` first; it becomes ``base_model.path`` and every variant's
    ``trainer.model_path``, so the base evaluation and every variant start from the same
    weights."""

    @model_validator(mode="before")
    @classmethod
    def _tiny_base_is_the_base_model(cls, data: Any) -> Any:
        base = data.get("base_model") if isinstance(data, dict) else None
        if not (isinstance(data, dict) and data.get("tiny_base") and isinstance(base, dict)):
            return data
        if "path" in base:
            raise ValueError(
                "base_model.path: is set by tiny_base (the model built at out_dir/base_model); "
                "remove it"
            )
        path = str(Path(str(data.get("out_dir", ""))) / "base_model")
        return {**data, "base_model": {**base, "path": path}}

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        every = [*names, *(e.name for e in self.eval_variants)]
        if len(set(every)) != len(every):
            raise ValueError(f"variants: names (eval_variants' too) must be unique, got {every}")
        for e in self.eval_variants:
            if e.of not in ("base", *names):
                raise invalid(
                    ("eval_variants", e.name, "of"),
                    f"expected base or a variant of the recipe ({', '.join(names) or 'none'}), "
                    f"got {e.of!r}",
                )
            self.model_with(e, ("eval_variants", e.name, "model"))
        listed = list(self.datasets)
        for i, (name, spec) in enumerate(self.datasets.items()):
            if spec.match_tokens is not None and spec.match_tokens not in listed[:i]:
                raise invalid(
                    ("datasets", name, "match_tokens"),
                    f"'{name}' matches the tokens of "
                    f"'{spec.match_tokens}', which is not a dataset listed before it "
                    f"(listed before: {', '.join(listed[:i]) or 'none'})",
                )
        for loc, name in [
            *((("held_out",), n) for n in self.held_out),
            *((("variants", v.name, "dataset"), v.dataset) for v in self.variants),
        ]:
            if name not in self.datasets:
                raise invalid(
                    loc,
                    f"{name!r} is not a dataset of the recipe (datasets: "
                    f"{', '.join(self.datasets) or 'none'})",
                )
        if self.tiny_base is not None:
            from needlework.training.sft_run import tiny_kwargs

            try:
                tiny_kwargs(self.tiny_base)
            except UserError as exc:
                raise ValueError(f"tiny_base: {str(exc).split(': ', 1)[-1]}") from None
        self._check_owned()
        self._check_references()

    # -- the configs the recipe names, loaded once ----------------------------------------------
    @functools.cached_property
    def generate_configs(self) -> dict[str, Any]:
        """Each dataset's generate config, its ``out_dir`` in the experiment."""
        out = {}
        for name, spec in self.datasets.items():
            owned: dict[str, Any] = {"out_dir": str(self.out_dir / "data" / name)}
            if spec.match_tokens is not None:
                target = str(self.out_dir / "data" / spec.match_tokens)
                owned["match_tokens"] = {"dataset": target, "count": spec.match_count}
            where = ("datasets", name, "config")
            out[name] = _child(where, spec.config, "generate", spec.overrides, owned)
        return out

    @functools.cached_property
    def train_configs(self) -> dict[str, Any]:
        """Each variant's train config, as for its first seed (:meth:`train_config` sets one)."""
        out = {}
        for v in self.variants:
            owned = self._train_owned(v, v.seeds[0])
            paths = {key: str(self.out_dir / p) for key, p in v.paths.items()}
            if self.tiny_base:
                paths["trainer.model_path"] = str(self.out_dir / "base_model")
            where = ("variants", v.name, "train_config")
            out[v.name] = _child(where, v.train_config, "train", v.overrides, {**paths, **owned})
        return out

    @functools.cached_property
    def eval_template(self) -> Any:
        """The eval config for the base model; each evaluation replaces the model and folder."""
        sets: dict[str, Any] = {
            key: [str(self.out_dir / p) for p in value]
            if isinstance(value, list)
            else str(self.out_dir / value)
            for key, value in self.eval_paths.items()
        }
        sets.update(model=to_dict(self.base_model), out_dir=str(self.out_dir / "eval" / "base"))
        folders = [str(self.out_dir / "data" / name) for name in self.held_out]

        def hold_out(data: dict[str, Any]) -> dict[str, Any]:
            if not folders or not isinstance(data.get("benchmarks"), list):
                return data
            return {**data, "benchmarks": [_with_held_out(b, folders) for b in data["benchmarks"]]}

        return _child(
            ("eval_config",), self.eval_config, "eval", self.eval_overrides, sets, hold_out
        )

    def model_with(self, change: EvalVariant, where: tuple[str, ...] = ()) -> Any:
        """The base model with ``change``'s fields set (a finetuned one: see :func:`_trained`)."""
        from needlework.config import build_unit

        spec = {**to_dict(self.base_model), **change.model}
        try:
            return build_unit(backends, spec, source="eval_variants", field="model")
        except UserError as exc:
            raise invalid(where, str(exc).split(": ", 1)[1]) from None

    def train_config(self, variant: VariantSpec, seed: int) -> Any:
        """The train config of one variant and seed."""
        return replace(self.train_configs[variant.name], **self._train_owned(variant, seed))

    def eval_config_for(self, model: Any, variant: str, seed: int | None, out: Path) -> Any:
        """The eval config of one model: the template with its model, folder and tags."""
        return replace(self.eval_template, model=model, out_dir=out, variant=variant, seed=seed)

    def _train_owned(self, variant: VariantSpec, seed: int) -> dict[str, Any]:
        data = self.out_dir / "data" / variant.dataset / f"seed{seed}" / variant.train_file
        run_dir = self.out_dir / "train" / variant.name / f"seed{seed}"
        return {"train_path": data, "out_dir": run_dir, "seed": seed, "variant": variant.name}

    # -- cross-references ------------------------------------------------------------------------
    def _check_owned(self) -> None:
        """No recipe setting may set a field the recipe sets itself (it would be overwritten)."""
        sets = [
            *((("datasets", n, "overrides"), "generate", _keys(s.overrides)) for n, s in
              self.datasets.items()),
            *((("variants", v.name, "overrides"), "train", _keys(v.overrides)) for v in
              self.variants),
            *((("variants", v.name, "paths"), "train", list(v.paths)) for v in self.variants),
            (("eval_overrides",), "eval", _keys(self.eval_overrides)),
            (("eval_paths",), "eval", list(self.eval_paths)),
        ]  # fmt: skip
        for loc, kind, keys in sets:
            clash = [k for k in keys if k.split(".")[0] in OWNED[kind]]
            if clash:
                raise invalid(
                    loc,
                    f"sets {clash[0]}, which the recipe sets itself for every step "
                    f"({', '.join(OWNED[kind])}); remove it",
                )

    def _check_references(self) -> None:
        """Every file a step reads is one a step writes: datasets' seeds and files, the paths
        the recipe gives inside out_dir."""
        files, trees = self._written()
        for v in self.variants:
            seeds = self.generate_configs[v.dataset].seeds
            for seed in v.seeds:
                if seed not in seeds:
                    raise invalid(
                        ("variants", v.name, "seeds"),
                        f"seed {seed} has no dataset: '{v.dataset}' is generated for seeds "
                        f"{list(seeds)}",
                    )
                wanted = f"data/{v.dataset}/seed{seed}/{v.train_file}"
                if wanted not in files:
                    raise invalid(
                        ("variants", v.name, "train_file"),
                        f"'{v.train_file}' is not a file dataset '{v.dataset}' writes (it "
                        f"writes {_listing(files, v.dataset, seed)})",
                    )
        given: list[tuple[tuple[str, ...], Mapping[str, str | list[str]]]] = [
            *((("variants", v.name, "paths"), v.paths) for v in self.variants),
            (("eval_paths",), self.eval_paths),
        ]
        for loc, paths in given:
            for key, value in paths.items():
                for p in value if isinstance(value, list) else [value]:
                    norm = Path(p).as_posix()
                    if norm not in files and not any(norm.startswith(t + "/") for t in trees):
                        raise invalid(
                            loc,
                            f"{key} is {p}, which no step of the recipe writes (datasets "
                            "write data/<dataset>/seed<S>/<split>.jsonl, trainings "
                            "train/<variant>/seed<S>/)",
                        )
        self.train_configs, self.eval_template  # noqa: B018 (load them: errors name the field)

    def _written(self) -> tuple[set[str], set[str]]:
        """Paths inside out_dir that the steps write: files and folders (exact), and folders
        written whole (anything inside them counts)."""
        files: set[str] = set()
        trees = {"base_model"} if self.tiny_base else set()
        suffixes = {"openai": ".openai.jsonl", "trl": ".trl.jsonl", "parquet": ".parquet"}
        for name, cfg in self.generate_configs.items():
            files |= {f"data/{name}", f"data/{name}/manifest.json"}
            for seed in cfg.seeds:
                folder = f"data/{name}/seed{seed}"
                files.add(folder)
                trees |= {f"{folder}/hf" for f in cfg.formats if f == "hf"}
                for split in ("train", "eval"):
                    files.add(f"{folder}/{split}.jsonl")
                    files |= {f"{folder}/{split}{suffixes[f]}" for f in cfg.formats if f != "hf"}
        for v in self.variants:
            trees |= {f"train/{v.name}/seed{s}" for s in v.seeds}
        return files, trees


def _keys(overrides: Sequence[str]) -> list[str]:
    return [".".join(parse_override(o)[0]) for o in overrides]


def _listing(files: set[str], dataset: str, seed: int) -> str:
    folder = f"data/{dataset}/seed{seed}/"
    return ", ".join(sorted(p[len(folder) :] for p in files if p.startswith(folder)))


def _with_held_out(item: Any, folders: list[str]) -> Any:
    """A benchmark entry with ``held_out`` set when its unit can exclude questions."""
    unit = {"name": item} if isinstance(item, str) else item
    cls = benchmarks.get_or_none(unit.get("name")) if isinstance(unit, dict) else None
    if cls is None or "held_out" not in {f.name for f in dataclasses.fields(cls)}:
        return item
    return {**unit, "held_out": folders}


def _child(
    where: tuple[str, ...],
    path: Path,
    kind: str,
    overrides: Sequence[str],
    sets: Mapping[str, Any],
    adjust: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Any:
    """Load one config the recipe names, as the recipe runs it: its overrides, then the fields
    the recipe sets (dotted keys); an error names the recipe field and the file."""
    try:
        data = read_yaml(path)
        found = config_kind(data)
        if found != kind:
            what = _a(found) if found else "not a needlework"
            raise ConfigError(f"is {what} config; expected {_a(kind)} config", source=str(path))
        data = apply_overrides(data, overrides)
        for key, value in sets.items():
            set_field(data, key.split("."), value)
        return load_config(config_class(kind), path, data=adjust(data) if adjust else data)
    except UserError as exc:
        raise invalid(where, str(exc)) from None


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


@dataclass
class Step:
    """One unit of work: what it writes, how to tell it is done, how to run it."""

    title: str
    done: Callable[[], bool]
    run: Callable[[], Any]
    after: tuple[int, ...] = ()
    """Indexes (in the plan) of the steps whose outputs this one reads."""
    heavy: bool = False
    """Trains or evaluates a model: under ``--jobs N`` it runs in a process of its own."""


def plan(recipe: RecipeConfig) -> list[Step]:
    """The ordered steps of an experiment (pure: the recipe's configs are loaded already)."""
    out = recipe.out_dir
    steps: list[Step] = []
    if recipe.tiny_base:
        steps.append(_tiny_base_step(recipe.tiny_base, out / "base_model"))
    for name, cfg in recipe.generate_configs.items():
        steps.append(_generate_step(name, cfg))
        steps[-1].after = tuple(range(len(steps) - 1))  # the base model, the datasets it matches
    prep = tuple(range(len(steps)))  # every model step reads the base model and the data
    trained: dict[tuple[str, int], tuple[int, Path]] = {}  # (variant, seed) -> its train step

    if recipe.evaluate_base:
        base = recipe.eval_config_for(recipe.base_model, "base", None, out / "eval" / "base")
        steps.append(_eval_step(base, lambda cfg: cfg))
        steps[-1].after = prep
    for variant in recipe.variants:
        for seed in variant.seeds:
            train = recipe.train_config(variant, seed)
            steps.append(_train_step(train))
            steps[-1].after = prep
            where = out / "eval" / variant.name / f"seed{seed}"
            evaluation = recipe.eval_config_for(recipe.base_model, variant.name, seed, where)
            steps.append(_eval_step(evaluation, _trained(recipe.base_model, train.out_dir)))
            steps[-1].after = (*prep, len(steps) - 2)
            trained[variant.name, seed] = len(steps) - 2, train.out_dir
    for ev in recipe.eval_variants:  # no training: a model above with settings changed
        if ev.of == "base":
            cfg = recipe.eval_config_for(
                recipe.model_with(ev), ev.name, None, out / "eval" / ev.name
            )
            steps.append(_eval_step(cfg, lambda cfg: cfg))
            steps[-1].after = prep
            continue
        for (name, seed), (train_step, run_dir) in trained.items():
            if name == ev.of:
                where = out / "eval" / ev.name / f"seed{seed}"
                cfg = recipe.eval_config_for(recipe.base_model, ev.name, seed, where)
                steps.append(_eval_step(cfg, _trained(recipe.base_model, run_dir, ev.model)))
                steps[-1].after = (*prep, train_step)
    if recipe.report:
        steps.append(
            Step(
                f"report -> {out / 'report'}",
                lambda: False,
                lambda: _report([out / "eval", out / "train"], out / "report"),
                after=tuple(range(len(steps))),
            )
        )
    return steps


def _tiny_base_step(spec: str, target: Path) -> Step:
    def run() -> None:
        from needlework.models.tiny import build_tiny_checkpoint
        from needlework.training.sft_run import build_once, tiny_kwargs

        build_once(target, lambda out: build_tiny_checkpoint(out, seed=0, **tiny_kwargs(spec)))

    return Step(f"build {spec} -> {target}", lambda: (target / "config.json").is_file(), run)


def _generate_step(name: str, cfg: Any) -> Step:
    def run() -> None:
        from needlework.datagen.pipeline import generate

        generate(cfg)

    out = Path(cfg.out_dir)
    return Step(f"generate {name} -> {out}", lambda: (out / "manifest.json").is_file(), run)


def _train_step(cfg: Any) -> Step:
    def run() -> None:
        from needlework.training.api import train

        train(cfg, resume=True)

    run_dir = Path(cfg.out_dir)
    title = f"train {cfg.variant} seed {cfg.seed} -> {run_dir}"
    return Step(title, lambda: (run_dir / "model.json").is_file(), run, heavy=True)


def _trained(base: Any, run_dir: Path, change: Mapping[str, Any] = {}) -> Callable[[Any], Any]:  # noqa: B006
    """The eval config with the finetuned model (known once training wrote model.json): the
    base model's settings, the run's weights or model id, then ``change``'s fields."""

    def with_model(cfg: Any) -> Any:
        from needlework.config import build_unit
        from needlework.models import read_model_json

        trained = read_model_json(run_dir / "model.json")
        spec = {**to_dict(base), **trained} if trained["name"] == to_dict(base)["name"] else trained
        spec = {**spec, **change}
        model = build_unit(backends, spec, source=str(run_dir / "model.json"), field="model")
        return replace(cfg, model=model)

    return with_model


def _eval_step(cfg: Any, finish: Callable[[Any], Any]) -> Step:
    labels = [b.label() for b in cfg.benchmarks]
    out = Path(cfg.out_dir)

    def run() -> None:
        from needlework.evaluation.runner import evaluate

        evaluate(finish(cfg))

    seed = f" seed {cfg.seed}" if cfg.seed is not None else ""
    title = f"eval {cfg.variant}{seed} on {', '.join(labels)} -> {out}"
    done = lambda: all((out / label / "metrics.json").is_file() for label in labels)  # noqa: E731
    return Step(title, done, run, heavy=True)


def _report(paths: list[Path], out_dir: Path) -> None:
    from needlework.reporting.report import report

    report([p for p in paths if p.is_dir()], out_dir)


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> RecipeConfig:
    """A recipe with every config it names loaded and every reference checked."""
    return load_config(RecipeConfig, path, overrides)


EXPERIMENT_ENTRIES = {"base_model", "data", "eval", "train", "logs", "report"}
"""What an experiment folder holds (see README, "Where results land")."""


def check_out_dir(out: Path) -> None:
    """An experiment's ``out_dir`` is new, or a folder of this shape (a rerun resumes it):
    anything else would get the experiment's files mixed in among its own."""
    if out.exists() and not out.is_dir():
        raise UserError(f"out_dir: {out} exists and is not a folder")
    stray = sorted(p.name for p in out.iterdir() if p.name not in EXPERIMENT_ENTRIES) if (
        out.is_dir()) else []  # fmt: skip
    if stray:
        raise UserError(
            f"out_dir: {out} holds {stray[0]}, which no needlework experiment writes; give a "
            "new folder or an earlier experiment's"
        )


def run_recipe(
    path: str | Path,
    overrides: Sequence[str] = (),
    *,
    dry_run: bool = False,
    jobs: int = 1,
    step: int | None = None,
    echo: Callable[[str], None] = print,
) -> Path:
    """Run (or, with ``dry_run``, list) every step of a recipe; returns the experiment folder.

    ``jobs`` > 1 runs up to that many training/evaluation steps at once, each in its own
    ``needlework run --step K`` process with cores/jobs threads, as soon as the steps it reads
    are done (on a 2-core CPU two one-thread processes beat one two-thread process); outputs are
    the same files as one after the other. ``step`` runs step K (1-based) alone.
    """
    if jobs < 1:
        raise UserError(f"--jobs: expected at least 1 process, got {jobs}")
    recipe = load_recipe(path, overrides)
    check_out_dir(recipe.out_dir)
    steps = plan(recipe)
    if step is not None and not 1 <= step <= len(steps):
        raise UserError(f"--step: the recipe has steps 1 to {len(steps)}, got {step}")
    if step is not None and not dry_run:
        missing = [k + 1 for k in steps[step - 1].after if not steps[k].done()]
        if missing:
            first = missing[0]
            raise UserError(
                f"--step {step}: reads what step(s) {', '.join(map(str, missing))} write, not "
                f"done yet (step {first}: {steps[first - 1].title}); run those first "
                f"(--step {first}) or the whole recipe"
            )
    if jobs > 1 and step is None and not dry_run:
        import sys

        def command(k: int) -> list[str]:
            return [sys.executable, "-m", "needlework", "run", str(path), *overrides, f"--step={k}"]

        _run_parallel(steps, jobs, command, recipe.out_dir / "logs", echo)
        return recipe.out_dir
    for i, one in enumerate(steps, 1):
        if step is not None and i != step:
            continue
        done = one.done()
        tag = "done, skipped" if done else ("would run" if dry_run else "running")
        echo(f"[{i}/{len(steps)}] {one.title} ({tag})")
        if not done and not dry_run:
            one.run()
    return recipe.out_dir


def _run_parallel(
    steps: list[Step],
    jobs: int,
    command: Callable[[int], list[str]],
    log_dir: Path,
    echo: Callable[[str], None],
) -> None:
    """Schedule the steps over ``jobs`` processes (step K runs ``command(K)``, its output in
    ``log_dir/stepKK.log``); light steps (data, report) run here, when no process runs."""
    import subprocess
    import time

    from needlework.runtime import die_with_parent, env_for_processes

    env = env_for_processes(jobs)
    n = len(steps)
    finished = {i for i, s in enumerate(steps) if s.done()}
    for i in sorted(finished):
        echo(f"[{i + 1}/{n}] {steps[i].title} (done, skipped)")
    waiting = [i for i in range(n) if i not in finished]
    running: dict[int, tuple[subprocess.Popen[bytes], Path, float]] = {}
    try:
        while waiting or running:
            for i in [i for i in waiting if set(steps[i].after) <= finished]:
                if not steps[i].heavy:
                    if running:
                        continue  # light steps wait for a quiet moment (they are quick)
                    echo(f"[{i + 1}/{n}] {steps[i].title} (running)")
                    steps[i].run()
                    finished.add(i)
                elif len(running) < jobs:
                    log = log_dir / f"step{i + 1:02d}.log"
                    log.parent.mkdir(parents=True, exist_ok=True)
                    with log.open("wb") as fh:
                        proc = subprocess.Popen(
                            command(i + 1),
                            env=env,
                            stdout=fh,
                            stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent,
                        )
                    running[i] = (proc, log, time.monotonic())
                    echo(f"[{i + 1}/{n}] {steps[i].title} (running, log {log})")
                else:
                    continue
                waiting.remove(i)
            for i, (proc, log, start) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[i]
                if proc.returncode != 0:
                    raise _StepFailed(f"[{i + 1}/{n}] {steps[i].title}", proc.returncode, log)
                finished.add(i)
                echo(f"[{i + 1}/{n}] {steps[i].title} (done in {time.monotonic() - start:.0f} s)")
            time.sleep(0.2)
    finally:
        for proc, _, _ in running.values():  # stopped, not lost: every step resumes
            proc.terminate()
        for proc, _, _ in running.values():
            proc.wait()


class _StepFailed(UserError):
    def __init__(self, title: str, code: int, log: Path) -> None:
        lines = [x for x in log.read_text(encoding="utf-8", errors="replace").splitlines() if x]
        last = lines[-1].strip() if lines else "(no output)"
        last = last.split(": error: ", 1)[1] if last.startswith("needlework ") else last
        super().__init__(f"{title} failed (exit {code}): {last} (whole log: {log})")
        self.exit_code = code if code in (1, 2) else 1


def run_cmd(args: argparse.Namespace) -> int:
    out = run_recipe(
        args.recipe, args.overrides, dry_run=args.dry_run, jobs=args.jobs, step=args.step
    )
    print(f"experiment folder: {out}")
    return 0
