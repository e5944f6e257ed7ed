"""The `general` suite end to end, offline, on small subsets of the real ../shared/data files:
the tiny local HF model through lm-eval's HFLM (log-likelihood + generation), and chat models
through the adapter on the letter-answer variants, where the expected scores are exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import SHARED_DATA, shared_file

from needlework.errors import UserError
from needlework.evaluation.benchmarks.general import TASKS, General
from needlework.evaluation.lm_eval_tasks import include_path, utils
from needlework.models.base import Backend
from needlework.models.hf import HF
from needlework.models.scripted import Scripted


@pytest.fixture(autouse=True)
def _no_data_setting(monkeypatch):
    """These tests name their data_dir (or the hub) themselves."""
    monkeypatch.delenv("NEEDLEWORK_DATA", raising=False)


pytest.importorskip("lm_eval")
LIMIT = 2
HF_LIMIT = 1  # the tiny model on CPU: 57 MMLU questions + 1 per other task


@pytest.fixture(scope="module")
def data_dir() -> str:
    for task in TASKS:
        for rel in utils.LOCAL_FILES[task]:
            shared_file(*rel.split("/"))
    return str(SHARED_DATA)


def expected_counts(limit: int) -> dict[str, int]:
    return {
        "mmlu": 57 * limit,
        "hellaswag": limit,
        "gsm8k": limit,
        "triviaqa": limit,
        "nq_open": limit,
    }


def check_run(run: Path, metrics: dict, counts: dict[str, int]) -> list[dict]:
    """The records.py format: every score's mean in [0, 1] inside its CI, n = the subset size,
    per-sample rows whose means are the metrics, lm-eval's own aggregate equal to ours."""
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    rows = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len({r["id"] for r in rows}) == len(rows) == metrics["n"] == sum(counts.values())
    assert metrics["benchmark"] == "general" and metrics["primary_metric"] in metrics["metrics"]
    for key, n in counts.items():
        task = metrics["tasks"][key]
        assert task["n"] == n and task["primary_metric"] in metrics["metrics"]
        assert sum(r["meta"]["task"] == key for r in rows) == n
    for name, stat in metrics["metrics"].items():
        values = [r["scores"][name] for r in rows if name in r["scores"]]
        assert stat["n"] == len(values) == counts[name.split("/")[0]]
        assert all(v in (0.0, 1.0) for v in values)
        assert 0.0 <= stat["ci_low"] <= stat["mean"] <= stat["ci_high"] <= 1.0
        assert stat["mean"] == pytest.approx(sum(values) / len(values))
        if name.endswith(("/abstained", "/wrong_answer")):  # ours, beside lm-eval's score
            assert name.split("/")[0] in ("triviaqa", "nq_open") and "lm_eval" not in stat
        else:
            assert stat["lm_eval"] == pytest.approx(stat["mean"])
    for r in rows:  # closed book: every answer is right, wrong, or an abstention
        key = r["meta"]["task"]
        if key in ("triviaqa", "nq_open"):
            right = r["scores"][f"{key}/exact_match,remove_whitespace"]
            parts = right + r["scores"][f"{key}/abstained"] + r["scores"][f"{key}/wrong_answer"]
            assert parts == 1.0 or (right and r["scores"][f"{key}/abstained"])
    return rows


def test_tiny_hf_model_on_every_task(tiny_checkpoint, data_dir, tmp_path, monkeypatch):
    bench = General(data_dir=data_dir, max_gen_toks=8, batch_size=16)
    model = HF(path=str(tiny_checkpoint), device="cpu", dtype="float32")
    run = tmp_path / "general"
    metrics = bench.run_suite(model, run, HF_LIMIT)
    rows = check_run(run, metrics, expected_counts(HF_LIMIT))
    assert set(metrics["metrics"]) == {
        "mmlu/acc",
        "hellaswag/acc",
        "hellaswag/acc_norm",
        "gsm8k/exact_match,strict-match",
        "gsm8k/exact_match,flexible-extract",
        "triviaqa/exact_match,remove_whitespace",
        "nq_open/exact_match,remove_whitespace",
        "triviaqa/abstained",
        "triviaqa/wrong_answer",
        "nq_open/abstained",
        "nq_open/wrong_answer",
    }
    assert metrics["tasks"]["gsm8k"]["num_fewshot"] == 5
    assert metrics["comparable_with_paper"] is False
    assert set(metrics["caveats"]) == {"hellaswag", "gsm8k", "triviaqa"}
    assert metrics["settings"]["max_gen_toks"] == 8 and metrics["settings"]["limit"] == HF_LIMIT
    assert len(metrics["by"]["subject"]) == 57
    mc = [r for r in rows if r["meta"]["task"] == "mmlu"]
    assert all(r["output"] in "ABCD" and len(r["lm_eval"]["loglikelihoods"]) == 4 for r in mc)

    # resume: finished tasks are read back, the model is never built again
    import needlework.evaluation.lm_eval_run as lm_eval_run

    def no_model(*a, **k):
        raise AssertionError("the model was rebuilt for finished tasks")

    monkeypatch.setattr(lm_eval_run, "build_lm", no_model)
    assert bench.run_suite(model, run, HF_LIMIT) == metrics
    import dataclasses

    faster = dataclasses.replace(model, batch_size=model.batch_size + 3)  # a speed-only field
    assert bench.run_suite(faster, run, HF_LIMIT) == metrics
    with pytest.raises(UserError, match="different limit"):
        bench.run_suite(model, run, HF_LIMIT + 1)
    other = HF(path=str(tiny_checkpoint), device="cpu", dtype="bfloat16")
    with pytest.raises(UserError, match="different model"):
        bench.run_suite(other, run, HF_LIMIT)


def gold_letters(data_dir: str, limit: int) -> tuple[list[str], list[str]]:
    """Gold letters of the first `limit` docs of every MMLU subject and of HellaSwag."""
    subjects = [t["dataset_kwargs"]["subject"] for t in _yaml("needlework_mmlu_gen.yaml")["task"]]
    mmlu = [
        ("ABCD"[d["answer"]])
        for s in subjects
        for d in list(utils.mmlu_dataset(data_dir=data_dir, subject=s)["test"])[:limit]
    ]
    hs = [
        "ABCD"[d["label"]]
        for d in list(utils.hellaswag_dataset(data_dir=data_dir)["validation"])[:limit]
    ]
    return mmlu, hs


def _yaml(name: str) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(include_path() / name, resolve_func=False)


@pytest.mark.parametrize("answer", ["B", "Z"])
def test_chat_backend_gets_letter_variants_with_exact_scores(data_dir, tmp_path, answer):
    """A chat model always answering one letter scores exactly the share of golds with it."""
    bench = General(data_dir=data_dir, tasks=("mmlu", "hellaswag"))
    metrics = bench.run_suite(Scripted(mode="constant", text=answer), tmp_path / "run", LIMIT)
    check_run(tmp_path / "run", metrics, {"mmlu_gen": 57 * LIMIT, "hellaswag_gen": LIMIT})
    mmlu, hs = gold_letters(data_dir, LIMIT)
    assert metrics["primary_metric"] == "mmlu_gen/exact_match,letter"
    assert metrics["settings"]["generative"] is True
    got = metrics["metrics"]
    assert got["mmlu_gen/exact_match,letter"]["mean"] == sum(g == answer for g in mmlu) / len(mmlu)
    assert got["hellaswag_gen/exact_match,letter"]["mean"] == sum(g == answer for g in hs) / len(hs)
    if answer == "Z":
        assert got["mmlu_gen/exact_match,letter"]["mean"] == 0.0
    else:
        assert 0 < got["mmlu_gen/exact_match,letter"]["mean"] < 1


class LetterOracle(Backend):
    """Answers each MMLU/HellaSwag question with its gold letter, found from the prompt text;
    records what it was sent."""

    def __init__(self, gold: dict[str, str], style: str = "{}"):
        self.gold, self.style, self.seen = gold, style, []

    def describe(self) -> str:
        return "test:oracle"

    def generate(self, conversations, *, max_new_tokens):
        self.seen.extend(conversations)
        out = []
        for conv in conversations:
            text = conv[-1]["content"]
            question = text[: text.rfind("\nA. ")]
            if conv[0]["role"] != "system":  # plain prompt: drop the description line
                question = question.split("\n\n", 1)[1]
            out.append(self.style.format(self.gold[question]))
        return out


def oracle_gold(data_dir: str, limit: int, shots: int) -> dict[str, str]:
    from lm_eval.tasks.hellaswag.utils import preprocess  # noqa: F401  (same clean-up as ours)

    gold: dict[str, str] = {}
    subjects = [t["dataset_kwargs"]["subject"] for t in _yaml("needlework_mmlu_gen.yaml")["task"]]
    for s in subjects:
        ds = utils.mmlu_dataset(data_dir=data_dir, subject=s)
        for d in list(ds["test"])[:limit]:
            key = d["question"].strip()
            assert gold.setdefault(key, "ABCD"[d["answer"]]) == "ABCD"[d["answer"]]
    for d in list(utils.hellaswag_dataset(data_dir=data_dir)["validation"])[:limit]:
        gold[d["query"]] = "ABCD"[d["label"]]
    return gold


@pytest.mark.parametrize("chat", [False, True])
def test_gold_letter_oracle_scores_one_through_lm_eval(data_dir, chat):
    """Through lm_eval itself: the adapter, the YAMLs' prompts, the letter filter and exact match.
    With the chat template, the description is a system turn and few-shot examples are turns."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from needlework.evaluation.lm_eval_adapter import ChatModelLM

    style = "The answer is {}." if chat else "{}"
    oracle = LetterOracle(oracle_gold(data_dir, LIMIT, 0), style)
    manager = TaskManager(
        include_path=str(include_path()), include_defaults=False, metadata={"data_dir": data_dir}
    )
    res = lm_eval.simple_evaluate(
        model=ChatModelLM(oracle, progress=False),
        limit=LIMIT,
        task_manager=manager,
        tasks=["needlework_mmlu_gen", "needlework_hellaswag_gen"],
        num_fewshot=2 if chat else 0,
        apply_chat_template=chat,
        fewshot_as_multiturn=chat,
    )
    assert res["results"]["needlework_mmlu_gen"]["exact_match,letter"] == 1.0
    assert res["results"]["needlework_hellaswag_gen"]["exact_match,letter"] == 1.0
    first = oracle.seen[0]
    if chat:  # system description, 2 example pairs, then the question
        assert [m["role"] for m in first] == [
            "system",
            "user",
            "assistant",
            "user",
            "assistant",
            "user",
        ]
        assert first[0]["content"].startswith("The following are multiple choice questions")
    else:
        assert [m["role"] for m in first] == ["user"]


def test_log_likelihood_tasks_refuse_chat_models(data_dir):
    import lm_eval
    from lm_eval.tasks import TaskManager

    from needlework.evaluation.lm_eval_adapter import ChatModelLM

    manager = TaskManager(
        include_path=str(include_path()), include_defaults=False, metadata={"data_dir": data_dir}
    )
    with pytest.raises(UserError, match="needlework_hellaswag_gen"):
        lm_eval.simple_evaluate(
            model=ChatModelLM(Scripted(mode="constant", text="A")),
            tasks=["needlework_hellaswag"],
            limit=1,
            task_manager=manager,
        )


def test_runner_delegates_to_run_suite(data_dir, tmp_path):
    """`needlework eval` path: the runner writes run info, the suite writes its results."""
    from needlework.config import load_config
    from needlework.evaluation.runner import EvalConfig, evaluate

    cfg = load_config(
        EvalConfig,
        data={
            "model": {"name": "scripted", "mode": "constant", "text": "(A)"},
            "benchmarks": [
                {"name": "general", "tasks": ["hellaswag", "nq_open"], "data_dir": data_dir}
            ],
            "out_dir": str(tmp_path),
            "limit": 3,
        },
    )
    (run,) = evaluate(cfg, progress=False)
    assert run == tmp_path / "general_hellaswag_nq_open"
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and info["benchmark"] == run.name
    rows = check_run(
        run, json.loads((run / "metrics.json").read_text()), {"hellaswag_gen": 3, "nq_open": 3}
    )
    assert rows[0]["output"] == "(A)"
    _, hs = gold_letters(data_dir, 3)
    got = json.loads((run / "metrics.json").read_text())["metrics"]
    assert got["hellaswag_gen/exact_match,letter"]["mean"] == hs.count("A") / 3
    assert got["nq_open/exact_match,remove_whitespace"]["mean"] == 0.0


def test_held_out_questions_never_reach_lm_eval(tiny_checkpoint, data_dir, tmp_path):
    """A dataset's held-out list goes through lm-eval's metadata to the local loader."""
    import json

    from needlework.evaluation.lm_eval_tasks.utils import nq_open_dataset

    full = nq_open_dataset(data_dir)["validation"]
    ds = tmp_path / "ds"
    ds.mkdir()
    held = [full[i]["question"] for i in range(3)]
    (ds / "manifest.json").write_text(json.dumps({"seeds": {}, "held_out": {"questions": held}}))
    bench = General(tasks=("nq_open",), data_dir=data_dir, max_gen_toks=4, held_out=(str(ds),))
    model = HF(path=str(tiny_checkpoint), device="cpu", dtype="float32")
    metrics = bench.run_suite(model, tmp_path / "run", 2)
    rows = [
        json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    ]
    assert [r["lm_eval"]["target"] for r in rows] == [full[3]["answer"], full[4]["answer"]]
    assert metrics["settings"]["held_out"]["questions"] == 3
