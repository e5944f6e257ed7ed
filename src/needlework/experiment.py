"""`needlework run RECIPE`: the paper's whole experiment as one resumable command.

generate every dataset -> finetune every variant x seed -> evaluate the base model and every
finetuned model on the recipe's benchmarks -> report. Each step is skipped when its outputs exist
(``manifest.json``, ``model.json``, every benchmark's ``metrics.json``), so an interrupted
experiment picks up where it stopped; a half-finished evaluation resumes sample by sample.

Run:  needlework run configs/recipes/tiny_cpu.yaml
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from needlework.config import config, load_config, read_yaml, to_dict
from needlework.errors import ConfigError, UserError
from needlework.models.base import ChatModel
from needlework.registry import backends, benchmarks


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

    name: str
    """Variant label in folders and reports, e.g. ``ft_template``."""
    train_config: Path
    """A ``needlework train`` config file."""
    dataset: str
    """Key into the recipe's ``datasets``; seed S trains on ``seed<S>/train.jsonl``."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds: each gets its own dataset seed, training seed and evaluation."""
    overrides: list[str] = field(default_factory=list)
    """``key=value`` overrides for the train config."""
    train_file: str = "train.jsonl"
    """File of the dataset's ``seed<S>/`` folder to train on (``train.openai.jsonl`` for the
    OpenAI backend)."""
    paths: dict[str, str] = field(default_factory=dict)
    """Train-config fields set to paths inside the experiment folder, each given relative to
    ``out_dir``: ``mix_path: data/chat/seed0/train.jsonl``."""

    def __post_init__(self) -> None:
        _check_relative("paths", self.paths)
        if not self.seeds:
            raise ValueError("seeds: expected at least one seed")
        if self.name == "base" or "/" in self.name:
            raise ValueError(f"name: '{self.name}' is reserved or not a folder name")


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
    eval_paths: dict[str, str | list[str]] = field(default_factory=dict)
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
    report: bool = True
    """Write ``report/`` at the end."""
    tiny_base: str | None = None
    """CPU demos/tests: build this tiny random model (``tiny:llama-h128-l2-a4``) at
    ``out_dir/base_model`` first; it becomes ``base_model.path`` and every variant's
    ``trainer.model_path``, so the base evaluation and every variant start from the same
    weights."""

    def __post_init__(self) -> None:
        _check_relative("eval_paths", self.eval_paths)
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variants: names must be unique, got {names}")
        seen: list[str] = []
        for name, spec in self.datasets.items():
            if spec.match_tokens is not None and spec.match_tokens not in seen:
                raise ValueError(
                    f"datasets: '{name}' matches the tokens of '{spec.match_tokens}', which is "
                    f"not a dataset listed before it (listed before: {', '.join(seen) or 'none'})"
                )
            seen.append(name)
        unknown = [d for d in self.held_out if d not in self.datasets]
        if unknown:
            raise ValueError(
                f"held_out: {', '.join(unknown)} is not a dataset of the recipe "
                f"(datasets: {', '.join(self.datasets) or 'none'})"
            )
        for v in self.variants:
            if v.dataset not in self.datasets:
                raise ValueError(
                    f"variants: '{v.name}' uses unknown dataset '{v.dataset}' "
                    f"(datasets: {', '.join(self.datasets) or 'none'})"
                )
        if self.tiny_base is not None:
            from needlework.training.sft_run import tiny_kwargs

            try:
                tiny_kwargs(self.tiny_base)
            except UserError as exc:
                raise ValueError(f"tiny_base: {str(exc).split(': ', 1)[-1]}") from None


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


def _check_relative(name: str, paths: Mapping[str, str | list[str]]) -> None:
    for key, value in paths.items():
        for p in value if isinstance(value, list) else [value]:
            if Path(p).is_absolute():
                raise ValueError(
                    f"{name}: '{key}' is {p}, an absolute path; give a path inside the "
                    "experiment folder, relative to out_dir"
                )


def path_overrides(paths: Mapping[str, str | list[str]], root: Path) -> list[str]:
    """``key=value`` overrides setting each field to its path (or paths) under ``root``."""
    import json

    def under(value: str | list[str]) -> str | list[str]:
        return [str(root / p) for p in value] if isinstance(value, list) else str(root / value)

    return [f"{key}={json.dumps(under(value))}" for key, value in paths.items()]


def _variant_overrides(recipe: RecipeConfig, variant: VariantSpec, root: Path) -> list[str]:
    """A variant's own overrides, then the paths the recipe sets inside ``root``."""
    base = [f"trainer.model_path={root / 'base_model'}"] if recipe.tiny_base else []
    return [*variant.overrides, *path_overrides(variant.paths, root), *base]


def _eval_data(recipe: RecipeConfig, data: dict[str, Any], root: Path) -> dict[str, Any]:
    """The eval config as the recipe runs it: its overrides, its paths under ``root`` and the
    held-out folders on every benchmark that takes them."""
    from needlework.config import apply_overrides

    data = apply_overrides(data, [*recipe.eval_overrides, *path_overrides(recipe.eval_paths, root)])
    if not recipe.held_out or not isinstance(data.get("benchmarks"), list):
        return data
    folders = [str(root / "data" / name) for name in recipe.held_out]
    items = []
    for item in data["benchmarks"]:
        unit = {"name": item} if isinstance(item, str) else item
        name = unit.get("name") if isinstance(unit, dict) else None
        cls = benchmarks.get(name) if isinstance(name, str) and name in benchmarks.names() else None
        if cls is not None and "held_out" in {f.name for f in dataclasses.fields(cls)}:
            unit = {**unit, "held_out": folders}
        items.append(unit)
    return {**data, "benchmarks": items}


def _check_ref(
    recipe_src: str,
    where: str,
    path: Path,
    kind: str,
    overrides: list[str],
    replace: dict[str, Any] | None = None,
    adjust: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> Any:
    """Load one config a recipe names, as the recipe will (overrides included, or ``adjust``
    instead, then ``replace`` set over it); any error names the recipe, the field and the
    referenced file."""
    from needlework.config import apply_overrides, config_class, config_kind

    try:
        data = read_yaml(path)
        found = config_kind(data)
        if found != kind:
            what = _a(found) if found else "not a needlework"
            raise ConfigError(f"is {what} config; expected {_a(kind)} config", source=str(path))
        data = adjust(data) if adjust is not None else apply_overrides(data, overrides)
        data = {**data, **(replace or {})}
        return load_config(config_class(kind), path, data=data)
    except UserError as exc:
        raise ConfigError(str(exc), source=recipe_src, field=where) from None


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def check_recipe(recipe: RecipeConfig, source: str | Path) -> None:
    """Every config the recipe names loads with its overrides, before any step runs (a typo
    in the last variant must not surface after an hour of training the first)."""
    src = str(source)
    scratch = recipe.out_dir / ".check"  # for the paths a step sets itself (nothing is written)
    for name, spec in recipe.datasets.items():
        _check_ref(
            src, f"datasets.{name}.config", spec.config, "generate",
            [*spec.overrides, f"out_dir={scratch}"], _matching(spec, scratch),
        )  # fmt: skip
    for i, variant in enumerate(recipe.variants):
        _check_ref(
            src,
            f"variants.{i}.train_config",
            variant.train_config,
            "train",
            [
                *_variant_overrides(recipe, variant, recipe.out_dir),
                f"train_path={scratch}/train.jsonl",
                f"out_dir={scratch}",
            ],
        )
    # the model is set per step (base, then each trained one): checked apart, not here
    probe = {"model": {"name": "scripted"}, "out_dir": str(scratch)}

    def adjust(data: dict[str, Any]) -> dict[str, Any]:
        return _eval_data(recipe, data, recipe.out_dir)

    _check_ref(src, "eval_config", recipe.eval_config, "eval", [], probe, adjust)


def plan(recipe: RecipeConfig, source: str | Path = "<recipe>") -> list[Step]:
    """The ordered steps of an experiment; pure apart from reading config files, each of
    which is checked first (:func:`check_recipe`)."""

    check_recipe(recipe, source)

    out = recipe.out_dir
    steps: list[Step] = []

    if recipe.tiny_base:
        steps.append(_tiny_base_step(recipe.tiny_base, out / "base_model"))
    for name, spec in recipe.datasets.items():
        steps.append(_generate_step(name, spec, out / "data" / name, _matching(spec, out / "data")))
        steps[-1].after = tuple(range(len(steps) - 1))  # the base model, the datasets it matches
    prep = tuple(range(len(steps)))  # every model step reads the base model and the data

    eval_data = _eval_data(recipe, read_yaml(recipe.eval_config), out)
    base = to_dict(recipe.base_model)
    if recipe.evaluate_base:
        steps.append(_eval_step(eval_data, "base", None, lambda: base, out / "eval" / "base"))
        steps[-1].after = prep
    for variant in recipe.variants:
        for seed in variant.seeds:
            run_dir = out / "train" / variant.name / f"seed{seed}"
            data = out / "data" / variant.dataset / f"seed{seed}" / variant.train_file
            overrides = _variant_overrides(recipe, variant, out)
            steps.append(_train_step(variant, overrides, seed, data, run_dir))
            steps[-1].after = prep
            steps.append(
                _eval_step(
                    eval_data,
                    variant.name,
                    seed,
                    _trained_model(base, run_dir),
                    out / "eval" / variant.name / f"seed{seed}",
                )
            )
            steps[-1].after = (*prep, len(steps) - 2)
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


def _matching(spec: DatasetSpec, data_root: Path) -> dict[str, Any]:
    """The generate-config ``match_tokens`` section a dataset spec asks for (or nothing)."""
    if spec.match_tokens is None:
        return {}
    target = data_root / spec.match_tokens
    return {"match_tokens": {"dataset": str(target), "count": spec.match_count}}


def _generate_step(name: str, spec: DatasetSpec, out_dir: Path, extra: dict[str, Any]) -> Step:
    def run() -> None:
        from needlework.config import apply_overrides
        from needlework.datagen.pipeline import GenerateConfig, generate

        data = {**apply_overrides(read_yaml(spec.config), spec.overrides), **extra}
        data["out_dir"] = str(out_dir)
        generate(load_config(GenerateConfig, spec.config, data=data))

    return Step(f"generate {name} -> {out_dir}", lambda: (out_dir / "manifest.json").is_file(), run)


def _train_step(
    variant: VariantSpec, overrides: list[str], seed: int, data: Path, run_dir: Path
) -> Step:
    def run() -> None:
        from needlework.training.api import train
        from needlework.training.config import TrainConfig

        cfg = load_config(
            TrainConfig,
            variant.train_config,
            [
                *overrides,
                f"train_path={data}",
                f"out_dir={run_dir}",
                f"seed={seed}",
                f"variant={variant.name}",
            ],
        )
        train(cfg, resume=True)

    return Step(
        f"train {variant.name} seed {seed} -> {run_dir}",
        lambda: (run_dir / "model.json").is_file(),
        run,
        heavy=True,
    )


def _trained_model(base: dict[str, Any], run_dir: Path) -> Callable[[], dict[str, Any]]:
    """The finetuned model as a backend spec: the base's settings, the run's weights/model id."""

    def spec() -> dict[str, Any]:
        from needlework.models import read_model_json

        trained = read_model_json(run_dir / "model.json")
        backend = trained.pop("name")
        if backend == base["name"]:
            return {**base, **trained}
        return {"name": backend, **trained}

    return spec


def _eval_step(
    eval_data: dict[str, Any],
    variant: str,
    seed: int | None,
    model: Callable[[], dict[str, Any]],
    eval_dir: Path,
) -> Step:
    from needlework.evaluation.runner import EvalConfig

    def build() -> Any:
        data = {
            **eval_data,
            "model": model(),
            "out_dir": str(eval_dir),
            "variant": variant,
            "seed": seed,
        }
        return load_config(EvalConfig, data=data)

    probe = load_config(
        EvalConfig, data={**eval_data, "model": {"name": "scripted"}, "out_dir": str(eval_dir)}
    )
    labels = [b.label() for b in probe.benchmarks]

    def done() -> bool:
        return all((eval_dir / label / "metrics.json").is_file() for label in labels)

    def run() -> None:
        from needlework.evaluation.runner import evaluate

        evaluate(build())

    seed_txt = f" seed {seed}" if seed is not None else ""
    title = f"eval {variant}{seed_txt} on {', '.join(labels)} -> {eval_dir}"
    return Step(title, done, run, heavy=True)


def _report(paths: list[Path], out_dir: Path) -> None:
    from needlework.reporting.report import report

    report([p for p in paths if p.is_dir()], out_dir)


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> RecipeConfig:
    """Load a recipe (with ``tiny_base``, the base model's path is the model it builds)."""
    from needlework.config import apply_overrides

    data = apply_overrides(read_yaml(path), list(overrides))
    out_dir = data.get("out_dir")
    if not isinstance(out_dir, str) or not out_dir:
        raise ConfigError("is required: the experiment folder", source=str(path), field="out_dir")
    base = data.get("base_model")
    if data.get("tiny_base") and isinstance(base, dict):
        if "path" in base:
            raise ConfigError(
                "is set by tiny_base (the model built at out_dir/base_model); remove it",
                source=str(path),
                field="base_model.path",
            )
        data["base_model"] = {**base, "path": str(Path(out_dir) / "base_model")}
    return load_config(RecipeConfig, path, data=data)


EXPERIMENT_ENTRIES = {"base_model", "data", "eval", "train", "logs", "report"}
"""What an experiment folder holds (see README, "Where results land")."""


def check_out_dir(out: Path) -> None:
    """An experiment's ``out_dir`` is new, or a folder of this shape (a rerun resumes it):
    anything else would get the experiment's files mixed in among its own."""
    if out.exists() and not out.is_dir():
        raise UserError(f"out_dir: {out} exists and is not a folder")
    if out.is_dir():
        stray = sorted(p.name for p in out.iterdir() if p.name not in EXPERIMENT_ENTRIES)
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
    steps = plan(recipe, path)
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
