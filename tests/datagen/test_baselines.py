"""The factual baseline generators (multidoc_qa, in2_style, niah_train): invariants, held-out
questions reaching no evaluation prompt, equal-token sizing and byte-identical reruns."""

from __future__ import annotations

import dataclasses
import gzip
import json
import random
from pathlib import Path

import pytest
from tests.conftest import shared_file

from needlework.config import load_config
from needlework.datagen.base import Slot
from needlework.datagen.passages import load_partition, sentences
from needlework.datagen.pipeline import GenerateConfig, generate
from needlework.errors import UserError
from needlework.evaluation.benchmarks.mdqa import MDQA
from needlework.heldout import load_held_out, question_key
from needlework.io import read_jsonl
from needlework.sources.answers import contains_answer
from needlework.tokenization import load_counter

WORDS = ["amber", "basil", "cedar", "delta", "ember", "fjord"]
WORDS += ["grove", "heath", "inlet", "juniper", "karst", "lagoon"]


@pytest.fixture(scope="module")
def oracle(tmp_path_factory) -> Path:
    """A small oracle file in the upstream format: 80 invented questions, one gold passage each
    (two questions share a passage, as some NQ questions do)."""
    path = tmp_path_factory.mktemp("oracle") / "oracle_fixture.jsonl.gz"
    rows = []
    for i in range(80):
        place, answer = f"{WORDS[i % 12]}ton{i}", f"{WORDS[(i * 5) % 12].capitalize()}ville{i}"
        text = (
            f"The region around {place} is mostly farmland. The capital of {place} is {answer}. "
            f"Visitors often arrive by train in summer."
        )
        if i == 1:  # shares question 0's passage
            text = rows[0]["ctxs"][0]["text"]
            answer = rows[0]["answers"][0]
        ctx = {"title": f"{place.title()}", "text": text, "hasanswer": True, "isgold": True}
        rows.append(
            {"question": f"what is the capital of {place}", "answers": [answer], "ctxs": [ctx]}
        )
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return path


def cfg_for(out: Path, generator: dict, **changes) -> GenerateConfig:
    data = {
        "generator": generator,
        "tokenizer": "whitespace",
        "max_context_tokens": 400,
        "reserve_tokens": 10,
        "seeds": [0],
        "num_train": 10,
        "num_eval": 4,
        "formats": ["openai", "trl"],
        "out_dir": str(out),
    }
    return dataclasses.replace(load_config(GenerateConfig, data=data), **changes)


def rows_of(folder: Path) -> list[dict]:
    return [
        r for split in ("train", "eval") for r in read_jsonl(folder / "seed0" / f"{split}.jsonl")
    ]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in ("run.json", "config.yaml", "manifest.json")
    }


def test_multidoc_qa_gold_once_at_its_position_and_answer_supported(tmp_path, oracle):
    gen = {"name": "multidoc_qa", "data_path": str(oracle), "num_docs": 5}
    manifest = generate(cfg_for(tmp_path / "ds", gen), progress=False)
    counter = load_counter("whitespace")
    rows = rows_of(tmp_path / "ds")
    asked = [r["meta"]["question"] for r in rows]
    assert len(set(asked)) == len(asked)  # one distinct question per sample
    for row in rows:
        meta, prompt = row["meta"], row["messages"][0]["content"]
        assert meta["num_docs"] == 5 and meta["prompt_tokens"] == counter.count(prompt)
        docs = [line for line in prompt.splitlines() if line.startswith("Document [")]
        assert len(docs) == 5
        holding = [i for i, d in enumerate(docs) if contains_answer(d, meta["answers"])]
        assert holding == [meta["gold_position"]]  # the gold passage, and only it, answers
        assert docs[meta["gold_position"]].startswith(
            f"Document [{meta['gold_position'] + 1}](Title: {meta['gold_title']})"
        )
        assert row["messages"][1]["content"] == meta["answers"][0]
        assert contains_answer(meta["supporting_sentence"], meta["answers"])
        assert set(meta["questions"]) >= {meta["question"]}
    held = manifest["held_out"]["questions"]
    assert set(q for r in rows for q in r["meta"]["questions"]) == set(held)


def test_multidoc_qa_restate_answer_starts_with_the_evidence(tmp_path, oracle):
    gen = {
        "name": "multidoc_qa",
        "data_path": str(oracle),
        "num_docs": 4,
        "answer_style": "restate",
    }
    generate(cfg_for(tmp_path / "ds", gen), progress=False)
    for row in rows_of(tmp_path / "ds"):
        meta, answer = row["meta"], row["messages"][1]["content"]
        assert answer.startswith(f'According to Document [{meta["gold_position"] + 1}], "')
        assert meta["supporting_sentence"] in answer
        assert answer.endswith(f"The answer is {meta['answers'][0]}.")


def test_in2_style_one_answering_passage_at_the_recorded_depth(tmp_path, oracle):
    gen = {"name": "in2_style", "data_path": str(oracle), "num_passages": None}
    generate(cfg_for(tmp_path / "ds", gen), progress=False)
    for row in rows_of(tmp_path / "ds"):
        meta, prompt = row["meta"], row["messages"][0]["content"]
        context = prompt.rsplit("\n\nAnswer the question", 1)[0]
        parts = context.split("\n\n")
        assert len(parts) == meta["num_passages"] >= 2
        holding = [i for i, p in enumerate(parts) if contains_answer(p, meta["answers"])]
        assert holding == [meta["gold_position"]]
        assert "Document [" not in prompt and meta["question"] in prompt


@pytest.mark.parametrize("haystack", ["filler", "passages"])
def test_niah_train_needle_in_the_recorded_unit(tmp_path, oracle, haystack):
    gen = {"name": "niah_train", "haystack": haystack, "data_path": str(oracle), "num_passages": 4}
    manifest = generate(cfg_for(tmp_path / "ds", gen), progress=False)
    for row in rows_of(tmp_path / "ds"):
        meta, prompt = row["meta"], row["messages"][0]["content"]
        units = prompt.rsplit("\n\n", 1)[0].split("\n\n")
        assert len(units) == 4
        assert [i for i, u in enumerate(units) if meta["needle"] in u] == [meta["gold_position"]]
        assert (
            sentences(units[meta["gold_position"]])[meta["needle_sentence_index"]] == meta["needle"]
        )
        assert row["messages"][1]["content"] == meta["answers"][0]
        assert meta["answers"][0] in meta["needle"] and meta["question"] in prompt
    # filler needs no real data and holds nothing out; passages hold out their owners
    assert ("held_out" in manifest) == (haystack == "passages")


def test_same_config_same_bytes_and_seeds_differ(tmp_path, oracle):
    gen = {"name": "multidoc_qa", "data_path": str(oracle), "num_docs": 4}
    generate(cfg_for(tmp_path / "a", gen, seeds=(0, 1)), progress=False)
    generate(cfg_for(tmp_path / "b", gen, seeds=(0, 1)), progress=False)
    a, b = snapshot(tmp_path / "a"), snapshot(tmp_path / "b")
    assert a == b
    assert a["seed0/train.jsonl"] != a["seed1/train.jsonl"]


def test_no_held_out_question_or_passage_reaches_an_mdqa_prompt(tmp_path, oracle):
    ds = tmp_path / "ds"
    generate(
        cfg_for(ds, {"name": "multidoc_qa", "data_path": str(oracle), "num_docs": 5}),
        progress=False,
    )
    train_text = "\n".join(r["messages"][0]["content"] for r in rows_of(ds))
    held = load_held_out([ds])
    assert held and held == {
        question_key(q)
        for q in json.loads((ds / "manifest.json").read_text())["held_out"]["questions"]
    }
    bench = MDQA(
        data_path=str(oracle),
        num_docs=3,
        gold_positions=(0, 2),
        num_questions=None,
        held_out=(str(ds),),
    )
    samples = list(bench.samples())
    assert samples
    for s in samples:
        prompt = s.messages[0]["content"]
        assert question_key(s.meta["question"]) not in held
        gold_line = prompt.splitlines()[2 + s.meta["gold_position"]]  # instruction, blank, docs
        gold_text = gold_line.split(") ", 1)[1]
        assert gold_text not in train_text  # the evaluated passage was never shown in training
    # every model given the same held_out list is asked the same questions
    again = MDQA(
        data_path=str(oracle),
        num_docs=3,
        gold_positions=(0, 2),
        num_questions=None,
        held_out=(str(ds / "manifest.json"),),
    )
    assert [s.id for s in again.samples()] == [s.id for s in samples]
    # without held_out the training questions are asked too
    plain = MDQA(data_path=str(oracle), num_docs=3, gold_positions=(0,), num_questions=None)
    assert {question_key(s.meta["question"]) for s in plain.samples()} & held


def test_held_out_errors_name_the_path(tmp_path):
    from needlework.errors import DataError, UserError

    with pytest.raises(DataError, match="held_out: .*nowhere: no manifest.json"):
        load_held_out([tmp_path / "nowhere"])
    (tmp_path / "m.json").write_text("[1, 2]")
    with pytest.raises(UserError, match=r"m\.json: expected "):
        load_held_out([tmp_path / "m.json"])
    (tmp_path / "m.json").write_text('{"held_out": {"questions": []}}')
    with pytest.raises(UserError, match=r"m\.json: field 'seeds': is required"):
        load_held_out([tmp_path / "m.json"])


def test_general_nq_open_and_triviaqa_drop_held_out_questions(tmp_path):
    pytest.importorskip("datasets")
    from needlework.evaluation.lm_eval_tasks.utils import nq_open_dataset, triviaqa_dataset

    data = shared_file("nq-open", "NQ-open.dev.jsonl.gz").parents[1]
    full = nq_open_dataset(str(data))["validation"]
    trivia = triviaqa_dataset(str(data))["validation"]
    picked = [full[i]["question"] for i in (0, 5, 9)] + [trivia[3]["question"] + "?"]
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "manifest.json").write_text(json.dumps({"seeds": {}, "held_out": {"questions": picked}}))
    kept = nq_open_dataset(str(data), held_out=[str(ds)])["validation"]
    assert len(kept) == len(full) - 3
    assert not {question_key(q) for q in picked} & {question_key(q) for q in kept["question"]}
    assert len(triviaqa_dataset(str(data), held_out=[str(ds)])["validation"]) == len(trivia) - 1


def test_general_held_out_needs_local_data(monkeypatch):
    from needlework.errors import DataError
    from needlework.evaluation.benchmarks.general import General
    from needlework.models.scripted import Scripted

    monkeypatch.delenv("NEEDLEWORK_DATA", raising=False)
    bench = General(tasks=("nq_open",), data_dir=None, held_out=("x",))  # loads: no data yet
    with pytest.raises(DataError, match="held_out: filtering questions needs the local tasks"):
        bench.preflight(Scripted())  # checked when the suite runs


def test_match_tokens_reaches_the_reference_count(tmp_path, oracle):
    ref = tmp_path / "kv"
    kv = {"name": "simple_dict_kv", "num_dicts": 6}
    generate(cfg_for(ref, kv, num_train=6), progress=False)
    target = sum(
        len(r["messages"][1]["content"].split()) for r in read_jsonl(ref / "seed0" / "train.jsonl")
    )
    gen = {
        "name": "multidoc_qa",
        "data_path": str(oracle),
        "num_docs": 3,
        "answer_style": "restate",
    }
    out = tmp_path / "mdqa"
    data = {"dataset": str(ref), "count": "answer"}
    cfg = cfg_for(out, gen)
    cfg = load_config(GenerateConfig, data={**_as_data(cfg), "match_tokens": data})
    manifest = generate(cfg, progress=False)
    match = manifest["seeds"]["0"]["token_match"]
    train = list(read_jsonl(out / "seed0" / "train.jsonl"))
    reached = sum(r["meta"]["answer_tokens"] for r in train)
    assert match["target_tokens"] == target and match["reached_tokens"] == reached
    assert match["num_train"] == len(train)
    longest = max(r["meta"]["answer_tokens"] for r in train)
    assert abs(reached - target) <= 2 * longest  # within a couple of samples of the target
    # total tokens are matched the same way
    cfg_total = load_config(
        GenerateConfig,
        data={
            **_as_data(cfg),
            "match_tokens": {**data, "count": "total"},
            "out_dir": str(tmp_path / "t"),
        },
    )
    total = generate(cfg_total, progress=False)["seeds"]["0"]["token_match"]
    assert total["count"] == "total" and total["reached_tokens"] >= total["target_tokens"]


def _as_data(cfg: GenerateConfig) -> dict:
    from needlework.config import to_dict

    return to_dict(cfg)


def test_match_tokens_missing_reference_is_a_clear_error(tmp_path, oracle):
    cfg = cfg_for(tmp_path / "x", {"name": "multidoc_qa", "data_path": str(oracle), "num_docs": 3})
    cfg = load_config(
        GenerateConfig, data={**_as_data(cfg), "match_tokens": {"dataset": str(tmp_path / "none")}}
    )
    with pytest.raises(UserError, match="match_tokens.dataset: .*seed0/train.jsonl not found"):
        generate(cfg, progress=False)
    assert not (tmp_path / "x").exists()
    bad = tmp_path / "none" / "seed0" / "train.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"messages": [{"role": "user", "content": "q"}]}\n{"messages": []}\n')
    with pytest.raises(UserError, match=r"train\.jsonl:2: field 'messages': .*at least 1 item"):
        generate(cfg, progress=False)
    assert not (tmp_path / "x").exists()


def test_partition_is_by_passage_and_asks_only_answerable(oracle):
    part = load_partition(str(oracle), 0.5, 0)
    train_texts = {part.passage(i).text for i in part.train}
    others = [i for i in range(len(part.records)) if i not in set(part.train)]
    assert others and not any(part.passage(i).text in train_texts for i in others)
    assert {part.records[0].question, part.records[1].question} <= set(
        part.owners([0])
    ) or 0 not in part.train
    with pytest.raises(UserError, match="num_train: the training partition has"):
        part.question(random.Random(0), Slot(0, "train", 10_000, 10_000), "x")


def test_real_oracle_multidoc_qa_sized_to_a_real_tokenizer(tmp_path):
    shared_file("lost-in-the-middle", "nq-open-oracle.jsonl.gz")
    gen = {"name": "multidoc_qa", "num_docs": None}
    cfg = cfg_for(
        tmp_path / "ds",
        gen,
        tokenizer="mistral:v1",
        max_context_tokens=1024,
        reserve_tokens=50,
        num_train=3,
        num_eval=1,
    )
    manifest = generate(cfg, progress=False)
    counter = load_counter("mistral:v1")
    assert manifest["seeds"]["0"]["num_docs"] >= 3
    for row in rows_of(tmp_path / "ds"):
        assert row["meta"]["prompt_tokens"] == counter.count(row["messages"][0]["content"]) < 974
