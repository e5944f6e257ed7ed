"""FLenQA: byte-exact prompts, loading (jsonl / parquet / zip / hub), filters, scoring."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from needlework.errors import DataError, UserError
from needlework.evaluation.benchmarks.flenqa import FLenQA, flenqa_prompt, key_facts
from needlework.sources.prompts import PROMPTS_DIR

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "flenqa_tiny.jsonl"
Q = "Is Dan older than Ben?"
MIXIN = "Ben is older than Cara. Padding. Cara is older than Dan."
RQ = "Erin is kind."
RULE = ["If someone is smart then they are kind."]


def row(dataset: str, **extra) -> dict:
    base = {
        "dataset": dataset,
        "assertion/question": Q,
        "mixin": MIXIN,
        "label": "False",
        "ctx_size": 250,
        "padding_type": "same",
        "dispersion": "first",
    }
    if dataset == "Simplified RuleTaker":
        base.update({"assertion/question": RQ, "rule": RULE, "statement": ["Erin is smart."]})
    return {**base, **extra}


# Expected strings typed out from the authors' notebook cell (spec §6.2 / flenqa.md), with the
# typographic quotes written as \u2019 so the test does not depend on the prompt files' bytes.
EXPECTED = {
    ("PIR", False): f"{MIXIN}\nTrue/False Question: {Q}\nAnswer only True or False.\n",
    ("PIR", True): (
        "Show your steps then answer with \u2019true\u2019 or \u2019false\u2019.\n"
        f"{MIXIN}\nTrue/False Question: {Q}\n"
        "Let\u2019s work this out in a step by step way to\n"
        "be sure we have the right answer.\n"
    ),
    ("MonoRel", False): (
        f"Here are some facts. Answer the exact following question based on the text: {Q} "
        f"Answer the question as it appears exactly.\n{MIXIN}\n{Q}\nAnswer only True or False.\n"
    ),
    ("MonoRel", True): (
        f"Here are some facts. Answer the exact following question based on the text: {Q} "
        "Answer the question as it appears exactly.\n"
        "Show your steps then answer with \u2019true\u2019 or \u2019false\u2019.\n"
        f"{MIXIN}\n{Q}\n"
        "Let\u2019s work this out in a step by step way to be sure we have the right answer. "
        "Show your work and finally answer with \u2019true\u2019 or \u2019false\u2019. The final "
        "step should include the exact text of the question and the answer.\n"
    ),
    ("Simplified RuleTaker", False): (
        f"Answer whether the statement {RQ} can be derived from the rule and the facts. "
        'Answer with either "True" or "False".\n'
        "Rule: ['If someone is smart then they are kind.']\n"
        f"Facts: {MIXIN}\n"
        'Answer with either "True or "False".\n'
    ),
    ("Simplified RuleTaker", True): (
        f"Answer whether the statement {RQ} can be derived from the rule and the facts.\n"
        'Show your steps then answer with either "True" or "False".\n'
        "Rule: ['If someone is smart then they are kind.']\n"
        f"Facts: {MIXIN}\n"
        'Answer with either "True or "False". Let\'s work this out in a step by step way to be '
        "sure we have the right answer.\n"
    ),
}


@pytest.mark.parametrize("task, cot", sorted(EXPECTED))
def test_prompts_are_byte_exact(task, cot):
    assert flenqa_prompt(row(task), cot) == EXPECTED[(task, cot)]


def test_prompt_files_end_with_one_newline():
    for path in PROMPTS_DIR.glob("flenqa_*.txt"):
        raw = path.read_bytes()
        assert raw.endswith(b"\n") and not raw.endswith(b"\n\n"), path.name
        assert b"\r" not in raw


def test_braces_in_fields_are_left_alone():
    text = flenqa_prompt(row("PIR", mixin="a {mixin} b {assertion/question}"), cot=False)
    assert text.startswith("a {mixin} b {assertion/question}\nTrue/False Question: ")


def test_key_facts():
    assert key_facts(row("PIR", facts=["f1", "f2"])) == ["f1", "f2"]
    assert key_facts(row("Simplified RuleTaker")) == ["Erin is smart."]
    assert key_facts(row("Simplified RuleTaker", statement="one statement")) == ["one statement"]


def test_samples_from_fixture_and_filters():
    samples = list(FLenQA(data_path=str(FIXTURE)).samples())
    assert len(samples) == 12
    assert {s.meta["task"] for s in samples} == {"PIR", "MonoRel", "Simplified RuleTaker"}
    assert all(len(s.messages) == 1 and s.messages[0]["role"] == "user" for s in samples)
    assert all(s.answers in (("True",), ("False",)) for s in samples)
    for s in samples:
        assert {"task", "ctx_size", "dispersion", "padding_type"} <= set(s.meta)
    only = FLenQA(
        data_path=str(FIXTURE), tasks=("MonoRel",), ctx_sizes=(500,), padding_types=("books",)
    )
    picked = list(only.samples())
    assert len(picked) == 1 and picked[0].meta["task"] == "MonoRel"
    assert len(list(FLenQA(data_path=str(FIXTURE), num_samples=5).samples())) == 5


def test_scores_without_and_with_cot():
    plain = FLenQA(data_path=str(FIXTURE))
    sample = next(s for s in plain.samples() if s.meta["label"] == "False")
    assert plain.score(sample, "False") == {"correct": 1.0, "refused": 0.0}
    assert plain.score(sample, "True.")["correct"] == 0.0
    assert plain.score(sample, "I can't tell") == {"correct": 0.0, "refused": 1.0}
    cot = FLenQA(data_path=str(FIXTURE), cot=True)
    assert cot.label() == "flenqa_cot" and plain.label() == "flenqa"
    s = next(x for x in cot.samples() if x.meta["task"] == "MonoRel")
    reasoning = "Ben is older than Cara. Cara is older than Dan. So Dan is not older: False"
    scores = cot.score(s, reasoning)
    assert scores == {
        "correct": 1.0,
        "refused": 0.0,
        "cot_coverage": 2.0,
        "coverage_failure": 0.0,
        "early_response": 0.0,
    }
    assert cot.score(s, "False. Done.")["early_response"] == 1.0


def test_parquet_and_zip_give_the_same_samples(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    columns = list(dict.fromkeys(k for r in rows for k in r))  # as the real file: every column
    pq.write_table(
        pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows]), tmp_path / "f.parquet"
    )
    with zipfile.ZipFile(tmp_path / "FLenQA.zip", "w") as zf:
        zf.writestr("FLenQA.jsonl", FIXTURE.read_text())
    reference = list(FLenQA(data_path=str(FIXTURE)).samples())
    for name in ("f.parquet", "FLenQA.zip"):
        got = list(FLenQA(data_path=str(tmp_path / name)).samples())
        assert [s.messages for s in got] == [s.messages for s in reference], name


@pytest.mark.parametrize(
    "change, message",
    [
        ({"drop": "mixin"}, r":2: field 'mixin': is required but missing"),
        ({"set": ("dataset", "Other")}, r":2: field 'dataset': expected one of 'PIR', .*'Other'"),
        ({"set": ("ctx_size", "big")}, r":2: field 'ctx_size': expected int, got 'big'"),
        ({"set": ("label", "Maybe")}, r":2: field 'label': expected one of 'True', .*'Maybe'"),
        ({"drop": "rule", "row": 9}, r":10: field 'rule': is required for Simplified RuleTaker"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, change, message):
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    bad = rows[change.get("row", 1)]
    if "drop" in change:
        del bad[change["drop"]]
    else:
        bad[change["set"][0]] = change["set"][1]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match=r"bad\.jsonl" + message):
        list(FLenQA(data_path=str(path)).samples())


def test_hub_id_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: nothing to fall back on
    with pytest.raises(DataError, match=r"alonj/FLenQA \(split eval\): cannot load.*data_path"):
        list(FLenQA().samples())


def test_config_validation():
    with pytest.raises(ValueError, match="tasks"):
        FLenQA(tasks=("PIR", "Nope"))
