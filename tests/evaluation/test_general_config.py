"""The `general` unit without running a model: validation, task plan, the shipped lm-eval YAMLs
(mirror lm-eval's built-in tasks), and the local-data loaders on the real ../shared/data files."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import SHARED_DATA, shared_file

from needlework.config import build_unit, dump_yaml
from needlework.errors import ConfigError, DataError, UserError
from needlework.evaluation.benchmarks.general import TASKS, General
from needlework.evaluation.lm_eval_run import rows_from_samples
from needlework.evaluation.lm_eval_tasks import include_path
from needlework.registry import benchmarks


@pytest.fixture(autouse=True)
def _no_data_setting(monkeypatch):
    """These tests name their data_dir (or the hub) themselves."""
    monkeypatch.delenv("NEEDLEWORK_DATA", raising=False)


pytest.importorskip("lm_eval")


def test_registered_and_yaml_round_trip():
    unit = build_unit(
        benchmarks,
        {
            "name": "general",
            "tasks": ["gsm8k", "mmlu"],
            "num_fewshot": {"mmlu": 5},
            "data_dir": "../shared/data",
        },
    )
    assert isinstance(unit, General)
    assert unit.tasks == ("gsm8k", "mmlu") and unit.num_fewshot == {"mmlu": 5}
    assert unit.label() == "general_gsm8k_mmlu" and General().label() == "general"
    assert unit.primary_metric == "gsm8k/exact_match,strict-match"
    assert "num_fewshot:\n  mmlu: 5" in dump_yaml(unit)


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"tasks": ["mmlu", "arc"]}, "tasks.1"),
        ({"tasks": []}, "tasks"),
        ({"tasks": ["mmlu", "mmlu"]}, "tasks"),
        ({"num_fewshot": {"gsm8k": 5}, "tasks": ["mmlu"]}, "num_fewshot"),
        ({"num_fewshot": {"mmlu": -1}}, "num_fewshot.mmlu"),
        ({"fraction": 1.0}, "fraction"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_gen_toks": 0}, "max_gen_toks"),
    ],
)
def test_bad_config_names_the_field(bad, field):
    with pytest.raises(ConfigError, match=f"field 'b.{field}'"):
        build_unit(benchmarks, {"name": "general", **bad}, field="b")


def test_plan_hub_local_and_generative():
    hub = General().plan("hf")
    assert [p["task"] for p in hub] == ["mmlu", "hellaswag", "gsm8k", "triviaqa", "nq_open"]
    assert [p["shots"] for p in hub] == [0, 0, 5, 0, 0]
    assert all(p["caveat"] is None and p["source"] == "hub" for p in hub)

    local = General(data_dir="/data", num_fewshot={"mmlu": 5}).plan("vllm")
    assert [p["task"] for p in local] == [f"needlework_{k}" for k in TASKS]
    assert local[0]["shots"] == 5
    assert {p["key"] for p in local if p["caveat"]} == {"hellaswag", "gsm8k", "triviaqa"}

    chat = General(data_dir="/data").plan("openai")  # no log-probabilities: letter variants
    assert [p["key"] for p in chat] == ["mmlu_gen", "hellaswag_gen", "gsm8k", "triviaqa", "nq_open"]
    assert chat[0]["task"] == "needlework_mmlu_gen" and chat[0]["primary"] == "exact_match,letter"
    assert General(generative=True).plan("hf")[1]["task"] == "needlework_hellaswag_gen"
    assert General(generative=True).label() == "general_gen"
    with pytest.raises(UserError, match="generative: false needs log-probabilities"):
        General(generative=False).plan("scripted")


def test_general_is_a_suite_not_a_sample_benchmark():
    """lm-eval runs whole tasks: the unit has run_suite and no samples()/score() stubs."""
    assert callable(General().run_suite)
    assert not hasattr(General, "samples") and not hasattr(General, "score")


def _yaml(path: Path) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(path, resolve_func=False, recursive=True)


def test_local_yamls_mirror_lm_eval_builtins():
    """Same prompt, stop strings, filters and metric settings as lm-eval's own tasks: only the
    data source differs (a drift here would make local and hub scores silently diverge)."""
    import lm_eval.tasks
    from lm_eval.utils import apply_template

    builtin = Path(lm_eval.tasks.__file__).parent
    ours = include_path()
    same = {
        "gsm8k/gsm8k.yaml": (
            "doc_to_text",
            "doc_to_target",
            "metric_list",
            "filter_list",
            "generation_kwargs",
            "num_fewshot",
            "output_type",
        ),
        "triviaqa/default.yaml": (
            "doc_to_text",
            "doc_to_target",
            "metric_list",
            "filter_list",
            "generation_kwargs",
            "target_delimiter",
            "output_type",
        ),
        "nq_open/nq_open.yaml": (
            "description",
            "doc_to_text",
            "doc_to_target",
            "metric_list",
            "filter_list",
            "generation_kwargs",
            "target_delimiter",
            "fewshot_delimiter",
            "output_type",
        ),
        "hellaswag/hellaswag.yaml": ("doc_to_text", "doc_to_choice", "metric_list", "output_type"),
        "mmlu/default/_default_template_yaml": (
            "doc_to_text",
            "doc_to_choice",
            "metric_list",
            "fewshot_config",
            "output_type",
            "test_split",
            "fewshot_split",
        ),
    }
    for rel, keys in same.items():
        ref = _yaml(builtin / rel)
        name = rel.split("/")[0]
        mine = _yaml(ours / f"needlework_{name}.yaml")
        for key in keys:
            assert mine.get(key) == ref.get(key), (name, key)
    # MMLU: the per-subject description, rendered, equals lm-eval's 57 generated ones
    mine = _yaml(ours / "needlework_mmlu.yaml")
    subjects = [t["dataset_kwargs"]["subject"] for t in mine["task"]]
    assert len(subjects) == 57
    for subject in subjects:
        ref = _yaml(builtin / "mmlu/default" / f"mmlu_{subject}.yaml")
        assert apply_template(mine["description"], {"subject": subject}) == ref["description"]
    gen = _yaml(ours / "needlework_mmlu_gen.yaml")
    assert [t["dataset_kwargs"] for t in gen["task"]] == [t["dataset_kwargs"] for t in mine["task"]]


def test_local_loaders_read_the_shared_files():
    from needlework.evaluation.lm_eval_tasks import utils

    for task in TASKS:
        for rel in utils.LOCAL_FILES[task]:
            shared_file(*rel.split("/"))
    root = str(SHARED_DATA)
    algebra = utils.mmlu_dataset(data_dir=root, subject="abstract_algebra")
    assert (len(algebra["test"]), len(algebra["dev"])) == (100, 5)
    first = algebra["test"][0]
    assert first["choices"] == ["0", "4", "2", "6"] and first["answer"] == 1
    assert (
        sum(
            len(utils.mmlu_dataset(data_dir=root, subject=s)["test"])
            for s in utils._mmlu_local(str(SHARED_DATA.resolve()))
        )
        == 14042
    )
    hs = utils.hellaswag_dataset(data_dir=root)["validation"]
    assert len(hs) == 10042 and hs[0]["label"] == 3
    assert hs[0]["query"] == "Roof shingle removal: A man is sitting on a roof. he"
    assert len(utils.gsm8k_dataset(data_dir=root)["test"]) == 1319
    tq = utils.triviaqa_dataset(data_dir=root)["validation"]
    assert len(tq) == 3000 and tq[1]["question"] == "What type of animal is a dik-dik?"
    assert "Antelope" in tq[1]["answer"]["aliases"]
    nq = utils.nq_open_dataset(data_dir=root)["validation"]
    assert len(nq) == 3610 and nq[0]["answer"] == ["14 December 1972 UTC", "December 1972"]


def test_loaders_fail_with_one_line_errors(tmp_path):
    from needlework.evaluation.lm_eval_tasks import utils

    with pytest.raises(DataError, match="missing gsm8k/gsm8k_test.jsonl.gz"):
        utils.gsm8k_dataset(data_dir=str(tmp_path))
    with pytest.raises(UserError, match="no data_dir given"):
        utils.nq_open_dataset()
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "gsm8k_test.jsonl.gz").write_bytes(b"")
    import gzip

    with gzip.open(tmp_path / "gsm8k" / "gsm8k_test.jsonl.gz", "wt") as fh:
        fh.write('{"question": "q"}\n')
    with pytest.raises(UserError, match=r"gsm8k_test.jsonl.gz:1: field 'answer': is required"):
        utils.gsm8k_dataset(data_dir=str(tmp_path))


def test_rows_from_samples_merges_filters_and_picks_the_best_choice():
    gen = [
        {
            "doc_id": 0,
            "doc": {"question": "q"},
            "target": "#### 3",
            "arguments": [("ctx", {})],
            "resps": [["The answer is #### 3"]],
            "filtered_resps": ["3"],
            "filter": "strict-match",
            "metrics": ["exact_match"],
            "exact_match": 1.0,
        },
        {
            "doc_id": 0,
            "doc": {"question": "q"},
            "target": "#### 3",
            "arguments": [("ctx", {})],
            "resps": [["The answer is #### 3"]],
            "filtered_resps": ["4"],
            "filter": "flexible-extract",
            "metrics": ["exact_match"],
            "exact_match": 0.0,
        },
    ]
    (row,) = rows_from_samples("gsm8k", "needlework_gsm8k", gen, "generate_until")
    assert row["id"] == "gsm8k-0" and row["output"] == "The answer is #### 3"
    assert row["scores"] == {
        "gsm8k/exact_match,strict-match": 1.0,
        "gsm8k/exact_match,flexible-extract": 0.0,
    }
    assert row["lm_eval"]["filtered"] == {"strict-match": "3", "flexible-extract": "4"}
    mc = [
        {
            "doc_id": 7,
            "doc": {"subject": "anatomy"},
            "target": 2,
            "arguments": [("ctx", " A"), ("ctx", " B"), ("ctx", " C"), ("ctx", " D")],
            "resps": [],
            "filtered_resps": [(-3.0, False), (-2.0, False), (-1.0, True), (-5.0, False)],
            "filter": "none",
            "metrics": ["acc"],
            "acc": 1.0,
        }
    ]
    (row,) = rows_from_samples("mmlu", "needlework_mmlu::x", mc, "multiple_choice")
    assert row["id"] == "mmlu-anatomy-7" and row["output"] == "C"
    assert row["scores"] == {"mmlu/acc": 1.0} and row["meta"]["subject"] == "anatomy"


def test_data_is_checked_when_the_suite_runs_not_when_it_loads(tmp_path):
    """held_out needs the local tasks: a config without data_dir loads (validate, --dry-run),
    and the run stops in one line before its folder is made."""
    from needlework.config import load_config
    from needlework.evaluation.runner import EvalConfig, evaluate

    bench = {"name": "general", "tasks": ["triviaqa"], "held_out": [str(tmp_path / "ds")]}
    data = {"model": "scripted", "benchmarks": [bench], "out_dir": str(tmp_path / "runs")}
    cfg = load_config(EvalConfig, data=data)
    assert cfg.benchmarks[0].data_dir is None
    with pytest.raises(DataError, match="general.held_out: filtering questions needs the local"):
        evaluate(cfg, progress=False)
    assert not (tmp_path / "runs").exists()
    missing = load_config(EvalConfig, data={**data, "benchmarks": [{**bench, "data_dir": "x"}]})
    with pytest.raises(DataError, match="missing triviaqa/triviaqa_sm_sub.jsonl.gz"):
        evaluate(missing, progress=False)
    assert not (tmp_path / "runs").exists()
