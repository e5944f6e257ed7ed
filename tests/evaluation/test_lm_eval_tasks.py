"""needlework's own benchmarks as lm-eval tasks: the include path, export(), and the promise that
`lm_eval` and `needlework eval` give the same per-sample scores on the same outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from needlework.config import build_unit
from needlework.errors import UserError
from needlework.evaluation.benchmarks.general import General
from needlework.evaluation.lm_eval_tasks import _split_turns, export, include_path
from needlework.evaluation.lm_eval_tasks.__main__ import export_config, main
from needlework.models.base import Backend
from needlework.records import Sample
from needlework.registry import benchmarks

pytest.importorskip("lm_eval")
FIX = Path(__file__).resolve().parents[1] / "fixtures"
CONFIGS = {
    "mdqa": {
        "name": "mdqa",
        "data_path": str(FIX / "mdqa_oracle_tiny.jsonl.gz"),
        "num_docs": 4,
        "gold_positions": [0, 3],
        "num_questions": 5,
    },
    "flenqa": {"name": "flenqa", "data_path": str(FIX / "flenqa_tiny.jsonl")},
    "flenqa_cot": {"name": "flenqa", "data_path": str(FIX / "flenqa_tiny.jsonl"), "cot": True},
    "kv_retrieval": {"name": "kv_retrieval", "data_path": str(FIX / "kv_eval_tiny.jsonl")},
    "kv_litm": {
        "name": "kv_retrieval",
        "source": "lost_in_the_middle",
        "data_path": str(FIX / "kv_litm_5_keys_tiny.jsonl"),
        "gold_positions": [0, 4],
    },
    "niah": {
        "name": "niah",
        "tokenizer": "char",
        "context_lengths": [400],
        "depth_percents": [0, 25, 50, 75, 100],
    },
}


def bench(name: str):
    return build_unit(benchmarks, CONFIGS[name], source=name)


class Mixed(Backend):
    """Deterministic outputs, a function of the conversation only: the gold answer in several
    wrappings, a wrong answer or a refusal, so every score takes both values."""

    def __init__(self, samples: list[Sample]):
        self.gold = {self.key(s.messages): s.answers[0] for s in samples}
        self.pick = {k: i % 5 for i, k in enumerate(sorted(self.gold))}

    @staticmethod
    def key(messages) -> str:
        return json.dumps([dict(m) for m in messages], sort_keys=True)

    def describe(self) -> str:
        return "test:mixed"

    def generate(self, conversations, *, max_new_tokens):
        out = []
        for conv in conversations:
            key = self.key(conv)
            gold = self.gold[key]
            out.append(
                [gold, f"It is {gold}.\nmore text", "I cannot say.", "False", "True"][
                    self.pick[key]
                ]
            )
        return out


def lm_eval_scores(model, task_dir: Path, task: str) -> dict[str, dict]:
    """Run one exported task through lm_eval itself; sample id -> output and scores."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from needlework.evaluation.lm_eval_adapter import ChatModelLM

    res = lm_eval.simple_evaluate(
        model=ChatModelLM(model, progress=False),
        tasks=[task],
        apply_chat_template=True,
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
    )
    out = {}
    for s in res["samples"][task]:
        sid = json.loads(s["doc"]["sample"])["id"]
        out[sid] = {"output": s["resps"][0][0], "scores": {m: s[m] for m in s["metrics"]}}
    agg = {
        k.split(",")[0]: v
        for k, v in res["results"][task].items()
        if k.endswith(",none") and "_stderr" not in k
    }
    return out | {"__aggregate__": agg}


def test_include_path_holds_the_general_tasks(capsys):
    from lm_eval.tasks import TaskManager

    names = set(TaskManager(include_path=str(include_path()), include_defaults=False).all_tasks)
    assert {
        "needlework_mmlu",
        "needlework_mmlu_gen",
        "needlework_hellaswag",
        "needlework_hellaswag_gen",
        "needlework_gsm8k",
        "needlework_triviaqa",
        "needlework_nq_open",
    } <= names
    assert main(["path"]) == 0
    assert capsys.readouterr().out.strip() == str(include_path())


def test_export_writes_an_lm_eval_task_folder(tmp_path, monkeypatch):
    b = bench("flenqa_cot")
    monkeypatch.chdir(tmp_path)  # relative out_dir: the YAML must still hold absolute paths
    path = export(b, "tasks", limit=5)
    spec = yaml.safe_load(path.read_text().replace("!function ", ""))
    data = Path(spec["dataset_kwargs"]["data_file"])
    assert path == tmp_path / "tasks" / "needlework_flenqa_cot.yaml" and data.is_absolute()
    assert spec["task"] == "needlework_flenqa_cot"
    assert spec["generation_kwargs"]["max_gen_toks"] == b.max_new_tokens == 400
    first = next(iter(b.samples()))
    assert [m["metric"] for m in spec["metric_list"]] == list(b.score(first, ""))
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    samples = list(b.samples())[:5]
    assert [r["id"] for r in rows] == [s.id for s in samples]
    assert [r["prompt"] for r in rows] == [s.messages[0]["content"] for s in samples]
    assert spec["metadata"]["needlework_benchmark"]["cot"] is True


def test_export_refuses_what_lm_eval_cannot_run(tmp_path):
    with pytest.raises(UserError, match="already an lm-eval suite"):
        export(General(), tmp_path)

    two_turns = Sample(
        "x-0", ({"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}), ("b",)
    )
    with pytest.raises(UserError, match="one user turn"):
        _split_turns(two_turns)
    system = Sample(
        "x-1", ({"role": "system", "content": "s"}, {"role": "user", "content": "u"}), ("b",)
    )
    assert _split_turns(system) == ("s", "u")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_lm_eval_scores_equal_the_benchmarks_own(name, tmp_path):
    """Same outputs through both paths -> identical per-sample scores and means."""
    b = bench(name)
    samples = list(b.samples())
    model = Mixed(samples)
    outputs = model.generate([list(s.messages) for s in samples], max_new_tokens=b.max_new_tokens)
    ours = {s.id: b.score(s, o) for s, o in zip(samples, outputs)}
    export(b, tmp_path)
    theirs = lm_eval_scores(model, tmp_path, f"needlework_{b.label()}")
    agg = theirs.pop("__aggregate__")
    assert {k: v["scores"] for k, v in theirs.items()} == ours
    assert {k: v["output"] for k, v in theirs.items()} == dict(zip(ours, outputs))
    primary = [v[b.primary_metric] for v in ours.values()]
    assert 0 < sum(primary) < len(primary), "outputs should be partly right, partly wrong"
    for metric in ours[samples[0].id]:
        assert agg[metric] == pytest.approx(sum(v[metric] for v in ours.values()) / len(ours))


@pytest.mark.parametrize("mode", ["echo", "last_line", "constant"])
@pytest.mark.parametrize("name", ["mdqa", "flenqa_cot", "kv_retrieval", "niah"])
def test_needlework_runner_and_lm_eval_agree(name, mode, tmp_path):
    """The two routes a user can take, end to end, with the same (scripted) model."""
    from needlework.config import load_config
    from needlework.evaluation import runner
    from needlework.models.scripted import Scripted

    model = {"name": "scripted", "mode": mode, "text": "The value is True."}
    cfg = load_config(
        runner.EvalConfig,
        data={"model": model, "benchmarks": [CONFIGS[name]], "out_dir": str(tmp_path / "runs")},
    )
    (run,) = runner.evaluate(cfg)
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    mine = {r["id"]: {"output": r["output"], "scores": r["scores"]} for r in rows}
    b = bench(name)
    export(b, tmp_path / "tasks")
    theirs = lm_eval_scores(
        Scripted(mode=mode, text=model["text"]), tmp_path / "tasks", f"needlework_{b.label()}"
    )
    agg = theirs.pop("__aggregate__")
    assert theirs == mine
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    for metric, value in agg.items():
        assert metrics[metric]["mean"] == pytest.approx(value)


def test_export_config_exports_every_long_context_benchmark(tmp_path):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": {"name": "scripted"},
                "benchmarks": [CONFIGS["mdqa"], CONFIGS["kv_retrieval"], {"name": "general"}],
            }
        )
    )
    paths = export_config(str(cfg), str(tmp_path / "out"), limit=3)
    assert [p.name for p in paths] == ["needlework_mdqa_4docs.yaml", "needlework_kv_retrieval.yaml"]
    rows = (tmp_path / "out" / "needlework_mdqa_4docs.jsonl").read_text().splitlines()
    assert len(rows) == 3
    assert main(["export", str(cfg), str(tmp_path / "o2"), "benchmarks=oops"]) == 2


def test_an_empty_local_file_is_a_one_line_data_error(tmp_path):
    import gzip

    from needlework.errors import DataError
    from needlework.evaluation.lm_eval_tasks.utils import LOCAL_FILES, nq_open_dataset

    path = tmp_path / LOCAL_FILES["nq_open"][0]
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wt") as fh:
        fh.write("")
    with pytest.raises(DataError, match="no rows"):
        nq_open_dataset(str(tmp_path))
