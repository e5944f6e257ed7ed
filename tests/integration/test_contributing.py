"""CONTRIBUTING.md, followed word for word: a new benchmark, backend and generator, each one
file in its stage's folder plus one config, run through ``validate``, ``eval``, ``generate``
and ``report`` with no other file edited, and the benchmark's figure in the report.

The package is copied to a temporary folder (the real tree is never touched) and the CLI runs
in a subprocess with that copy first on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import needlework

pytestmark = pytest.mark.slow

BENCHMARK = '''\
"""Number echo: the model is asked to repeat one number hidden among others (a test unit).

Run:  needlework eval --config configs/eval/number_echo.yaml
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from needlework.config import PositiveInt, config
from needlework.evaluation.base import Benchmark
from needlework.records import Sample
from needlework.registry import benchmarks


@benchmarks.register("number_echo")
@config
class NumberEcho(Benchmark):
    """Repeat the number marked as the answer; accuracy by how many numbers surround it."""

    num_samples: PositiveInt = 12
    """Samples in all, spread over the sizes."""
    sizes: tuple[PositiveInt, ...] = (2, 4, 8)
    """Numbers per prompt."""
    seed: int = 0
    """Chooses the numbers."""

    primary_metric = "exact"
    group_by = ("size",)

    def samples(self) -> Iterator[Sample]:
        rng = random.Random(self.seed)
        for i in range(self.num_samples):
            size = self.sizes[i % len(self.sizes)]
            numbers = [rng.randrange(100, 999) for _ in range(size)]
            gold = numbers[rng.randrange(size)]
            text = f"Numbers: {numbers}. The answer is {gold}. Repeat the answer."
            yield Sample(f"echo-{i}", ({"role": "user", "content": text},), (str(gold),),
                         {"size": size})

    def score(self, sample: Sample, output: str) -> dict[str, float]:
        return {"exact": float(output.strip() == sample.answers[0])}
'''

BACKEND = '''\
"""A backend that answers with the number after "The answer is" (a test unit).

Run:  needlework eval --config configs/eval/number_echo.yaml
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from needlework.models.base import Backend
from needlework.records import Message
from needlework.registry import backends


@backends.register("answer_reader")
@dataclass(frozen=True)
class AnswerReader(Backend):
    """Reads the answer out of the prompt, or says ``none`` (``miss_every``-th prompt)."""

    speed_fields: ClassVar[frozenset[str]] = frozenset()

    miss_every: int = 0
    """Answer ``none`` to every n-th prompt (0: never)."""

    def __post_init__(self) -> None:
        if self.miss_every < 0:
            raise ValueError("miss_every: expected >= 0")

    def describe(self) -> str:
        return f"answer_reader:{self.miss_every}"

    def token_counter(self) -> str | None:
        return None

    def generate(
        self, conversations: Sequence[Sequence[Message]], *, max_new_tokens: int
    ) -> list[str]:
        out = []
        for i, conv in enumerate(conversations):
            found = re.search(r"The answer is (\\d+)", conv[-1]["content"])
            miss = self.miss_every and i % self.miss_every == 0
            out.append("none" if miss or not found else found.group(1))
        return out
'''

GENERATOR = '''\
"""Lists of numbers, one marked: a test generator with the paper's gold-position rules.

Run:  needlework generate --config configs/datagen/number_lists.yaml
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

from needlework.datagen.base import Slot, Task
from needlework.registry import generators


@generators.register("number_lists")
@dataclass(frozen=True)
class NumberLists:
    """``num_units`` lists of numbers; the answer is the first number of the gold list."""

    unit: ClassVar[str] = "lists"
    num_lists: int | None = 5
    """Lists per prompt; null = as many as fit the budget."""
    frac_0: float = 0.0
    """Fraction with the gold list first."""
    frac_top5: float = 0.0
    """Further fraction with the gold list near the start."""

    def __post_init__(self) -> None:
        if self.num_lists is not None and self.num_lists < 1:
            raise ValueError("num_lists: expected >= 1 or null")

    @property
    def num_units(self) -> int | None:
        return self.num_lists

    def build(
        self, rng: random.Random, num_units: int, gold_position: int, slot: Slot | None = None
    ) -> Task:
        lists = [[rng.randrange(10, 99) for _ in range(3)] for _ in range(num_units)]
        body = "\\n".join(f"List {i}: {xs}" for i, xs in enumerate(lists))
        prompt = f"{body}\\nWhat is the first number of list {gold_position}?"
        return Task(prompt, str(lists[gold_position][0]), {"lists": num_units})
'''

EVAL_CONFIG = """\
# Run: needlework eval --config configs/eval/number_echo.yaml
model:
  name: answer_reader
  miss_every: 4
benchmarks:
  - name: number_echo
    num_samples: 12
out_dir: {out}
"""

DATAGEN_CONFIG = """\
# Run: needlework generate --config configs/datagen/number_lists.yaml
generator:
  name: number_lists
  num_lists: 4
tokenizer: char
max_context_tokens: 400
reserve_tokens: 10
seeds: [0]
num_train: 6
num_eval: 2
formats: [trl]
out_dir: {out}
"""


@pytest.fixture(scope="module")
def contributed(tmp_path_factory):
    """A copy of the package with the three new unit files added, and a CLI runner on it."""
    root = tmp_path_factory.mktemp("contrib")
    pkg = root / "src" / "needlework"
    shutil.copytree(
        Path(needlework.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__")
    )
    # CONTRIBUTING step 1 and 2: one file in the stage's folder, registered under its stem.
    (pkg / "evaluation" / "benchmarks" / "number_echo.py").write_text(BENCHMARK)
    (pkg / "models" / "answer_reader.py").write_text(BACKEND)
    (pkg / "datagen" / "number_lists.py").write_text(GENERATOR)
    # Step 3: one config each.
    configs = root / "configs"
    (configs / "eval").mkdir(parents=True)
    (configs / "datagen").mkdir()
    (configs / "eval" / "number_echo.yaml").write_text(EVAL_CONFIG.format(out=root / "runs"))
    (configs / "datagen" / "number_lists.yaml").write_text(DATAGEN_CONFIG.format(out=root / "data"))
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "NEEDLEWORK_THREADS": "1"}

    def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [sys.executable, "-m", "needlework", *args],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if ok:
            assert done.returncode == 0, done.stderr[-2000:]
        return done

    where = subprocess.run(
        [sys.executable, "-c", "import needlework; print(needlework.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(pkg)), where  # the copy runs, not the installed tree
    return root, cli


def test_new_units_are_listed_with_their_documented_fields(contributed):
    _, cli = contributed
    listing = cli("ls").stdout
    assert all(name in listing for name in ("number_echo", "answer_reader", "number_lists"))
    fields = cli("ls", "number_echo").stdout
    assert "num_samples" in fields and "Samples in all, spread over the sizes." in fields


def test_new_benchmark_and_backend_validate_evaluate_and_report_with_a_figure(contributed):
    root, cli = contributed
    config = "configs/eval/number_echo.yaml"
    assert "ok" in cli("validate", config).stdout
    cli("eval", "--config", config)
    run = root / "runs" / "number_echo"
    metrics = json.loads((run / "metrics.json").read_text())
    rows = [json.loads(x) for x in (run / "predictions.jsonl").read_text().splitlines()]
    # miss_every 4 answers "none" to prompts 0, 4, 8: 9 of 12 right
    assert metrics["metrics"]["exact"]["mean"] == pytest.approx(9 / 12)
    assert sum(r["scores"]["exact"] for r in rows) == 9
    # what the benchmark did not write is derived: a line over its one breakdown, rank 100
    assert metrics["figures"] == [
        {"kind": "line", "heading": "{label}: {metric} by size", "name": "by_size", "x": "size"}
    ]
    assert metrics["report_rank"] == 100 and metrics["secondary_metrics"] == []
    cli("report", str(run), "--out", str(root / "report"))
    text = (root / "report" / "report.md").read_text()
    assert "## number_echo: exact by size" in text
    assert (root / "report" / "figures" / "number_echo_by_size.png").stat().st_size > 1000
    assert "No problems found" in text


def test_new_generator_generates(contributed):
    root, cli = contributed
    config = "configs/datagen/number_lists.yaml"
    assert "ok" in cli("validate", config).stdout
    cli("generate", "--config", config)
    train = next((root / "data").rglob("train*.jsonl"))
    first = json.loads(train.read_text().splitlines()[0])
    assert "What is the first number of list" in json.dumps(first)


def test_a_unit_missing_a_member_is_refused_with_the_list(contributed):
    """The registration error a newcomer sees when a member is left out (CONTRIBUTING step 2)."""
    root, cli = contributed
    path = root / "src" / "needlework" / "evaluation" / "benchmarks" / "number_echo.py"
    good = path.read_text()
    try:
        path.write_text(good.replace('    primary_metric = "exact"\n', ""))
        done = cli("ls", ok=False)
        assert done.returncode != 0
        assert "lacks required member(s): primary_metric" in done.stderr
        assert "Traceback" not in done.stderr and done.returncode == 2
    finally:
        path.write_text(good)
