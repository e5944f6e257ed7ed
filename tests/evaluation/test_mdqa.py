"""MDQA: golden prompts (Lost in the Middle's own test strings), building, files, baselines."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from tests.conftest import shared_file

from needlework.errors import DataError, UserError
from needlework.evaluation.benchmarks.mdqa import MDQA, official_path
from needlework.sources.answers import contains_answer
from needlework.sources.data import Document, read_qa_records
from needlework.sources.mdqa import closedbook_prompt, qa_prompt

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ORACLE = FIXTURES / "mdqa_oracle_tiny.jsonl.gz"
INSTRUCTION = (
    "Write a high-quality answer for the given question using only the provided search results "
    "(some of which might be irrelevant)."
)
DOCS = [Document("first doc", "first doc text"), Document("second doc", "second doc text")]
FORMATTED = (
    "Document [1](Title: first doc) first doc text\nDocument [2](Title: second doc) second doc text"
)


def test_qa_prompt_golden():
    expected = f"{INSTRUCTION}\n\n{FORMATTED}\n\nQuestion: test question\nAnswer:"
    assert qa_prompt("test question", DOCS) == expected


def test_qa_prompt_variants_golden():
    randomly = f"{INSTRUCTION} The search results are ordered randomly."
    assert qa_prompt("q", DOCS, "qa_ordered_randomly") == (
        f"{randomly}\n\n{FORMATTED}\n\nQuestion: q\nAnswer:"
    )
    assert qa_prompt("q", DOCS, "qa_with_query_aware_contextualization") == (
        f"{INSTRUCTION}\n\nQuestion: q\n\n{FORMATTED}\n\nQuestion: q\nAnswer:"
    )
    assert closedbook_prompt("test question") == "Question: test question\nAnswer:"
    # braces in a question are text, not placeholders
    assert qa_prompt("what is {x}?", DOCS).endswith("Question: what is {x}?\nAnswer:")


def docs_of(prompt: str) -> list[str]:
    return [line for line in prompt.split("\n") if line.startswith("Document [")]


def built(**kw) -> MDQA:
    base = {
        "data_path": str(ORACLE),
        "num_docs": 4,
        "gold_positions": (0, 3),
        "num_questions": None,
    }
    return MDQA(**{**base, **kw})


@pytest.mark.parametrize("distractors", ["random", "bm25"])
def test_build_places_gold_and_never_uses_answer_passages(distractors):
    bench = built(distractors=distractors)
    records = read_qa_records(ORACLE)
    samples = list(bench.samples())
    assert len(samples) == 12 * 2
    by_question: dict[int, dict[int, list[str]]] = {}
    for s in samples:
        q, g = s.meta["question_index"], s.meta["gold_position"]
        lines = docs_of(s.messages[0]["content"])
        assert len(lines) == 4 and [ln.split("]")[0] for ln in lines] == [
            f"Document [{i}" for i in range(1, 5)
        ]
        gold = records[q].documents[0]
        assert lines[g] == f"Document [{g + 1}](Title: {gold.title}) {gold.text}"
        others = [ln.split(") ", 1)[1] for i, ln in enumerate(lines) if i != g]
        assert gold.text not in others and len(set(others)) == 3
        for i, ln in enumerate(lines):
            if i != g:
                assert not contains_answer(ln, s.answers), (ln, s.answers)
        by_question.setdefault(q, {})[g] = [ln.split("(Title: ", 1)[1] for ln in lines]
    # the same distractors, in the same order, at every gold position
    for q, per_pos in by_question.items():
        without_gold = [[d for i, d in enumerate(docs) if i != g] for g, docs in per_pos.items()]
        assert without_gold[0] == without_gold[1], q


def test_bm25_picks_the_lexical_hard_negative():
    # "when was harrow boat club founded": the Selby Cup passage mentions the club, not 1851
    samples = [s for s in built(distractors="bm25").samples() if s.meta["question_index"] == 10]
    first_distractor = docs_of(samples[0].messages[0]["content"])[1]
    assert "(Title: Selby Cup)" in first_distractor
    # and the Selby Cup question never sees the Harrow passage (it holds that answer)
    selby = [s for s in built(distractors="bm25").samples() if s.meta["question_index"] == 6]
    assert all("(Title: Harrow Boat Club)" not in s.messages[0]["content"] for s in selby)


def test_build_is_deterministic_and_seeded():
    a = [s.messages for s in built().samples()]
    assert a == [s.messages for s in built().samples()]
    assert a != [s.messages for s in built(seed=1).samples()]


def test_question_subset_is_shared_across_positions():
    samples = list(built(num_questions=5).samples())
    per_position = {}
    for s in samples:
        per_position.setdefault(s.meta["gold_position"], []).append(s.meta["question_index"])
    assert per_position[0] == per_position[3] and len(per_position[0]) == 5
    assert len({s.id for s in samples}) == len(samples)


def test_dev_and_test_splits_are_disjoint_and_fixed():
    """Settings tuned on ``split: dev`` never saw a ``split: test`` question, whatever the seed."""

    def questions(**kw) -> set[int]:
        return {s.meta["question_index"] for s in built(**kw).samples()}

    everything, dev, test = questions(), questions(split="dev"), questions(split="test")
    assert dev and test and not dev & test and dev | test == everything
    assert len(dev) == max(1, len(everything) // 10)
    assert questions(split="dev", seed=1) == dev and questions(split="test", seed=1) == test
    assert questions(split="test", num_questions=3) <= test
    assert built(split="dev").label() == "mdqa_4docs_dev" and built().label() == "mdqa_4docs"


def test_score_uses_first_line_only():
    bench = built()
    sample = next(iter(bench.samples()))
    assert bench.score(sample, sample.answers[0]) == {
        "best_subspan_em": 1.0,
        "abstained": 0.0,
        "unsupported": 0.0,
    }
    assert bench.score(sample, f"Not sure.\n{sample.answers[0]}") == {
        "best_subspan_em": 0.0,
        "abstained": 1.0,
        "unsupported": 0.0,
    }
    invented = bench.score(sample, "Zyxwvut Qqqq")
    assert invented == {"best_subspan_em": 0.0, "abstained": 0.0, "unsupported": 1.0}


def test_closed_book_scores_wrong_answers_not_support():
    bench = built(mode="closedbook")
    sample = next(iter(bench.samples()))
    assert bench.score(sample, "Zyxwvut") == {
        "best_subspan_em": 0.0,
        "abstained": 0.0,
        "wrong_answer": 1.0,
    }
    assert bench.score(sample, "I don't know")["wrong_answer"] == 0.0


def test_baselines():
    closed = list(built(mode="closedbook").samples())
    assert len(closed) == 12 and closed[0].messages[0]["content"].startswith("Question: ")
    assert "Document [" not in closed[0].messages[0]["content"]
    oracle = list(built(mode="oracle").samples())
    assert all(len(docs_of(s.messages[0]["content"])) == 1 for s in oracle)
    assert {built(mode="closedbook").label(), built(mode="oracle").label()} == {
        "mdqa_closedbook",
        "mdqa_oracle",
    }


def test_official_files_from_a_folder():
    bench = MDQA(
        data_path=str(FIXTURES / "mdqa_files"),
        source="files",
        num_docs=4,
        gold_positions=(0, 3),
        num_questions=None,
    )
    samples = list(bench.samples())
    assert len(samples) == 24 and bench.label() == "mdqa_4docs_litm"
    assert {s.meta["gold_position"] for s in samples} == {0, 3}
    assert all(s.meta["distractors"] == "contriever" for s in samples)


def test_official_file_with_unexpected_gold_position(tmp_path):
    one = FIXTURES / "mdqa_files" / "nq-open-4_total_documents_gold_at_3.jsonl.gz"
    bench = MDQA(data_path=str(one), source="files", num_docs=4, gold_positions=(0,))
    with pytest.raises(
        DataError,
        match=r"gold_at_3\.jsonl\.gz:1: expected 4 documents with the "
        r"gold one at index 0",
    ):
        list(bench.samples())
    missing = MDQA(
        data_path=str(FIXTURES / "mdqa_files"), source="files", num_docs=4, gold_positions=(1,)
    )
    with pytest.raises(DataError, match="gold_at_1.jsonl.gz not found.*download: true"):
        list(missing.samples())


def test_config_validation():
    with pytest.raises(ValueError, match="gold_positions"):
        MDQA(num_docs=20, gold_positions=(0, 20))
    with pytest.raises(ValueError, match="gold_positions"):
        MDQA(gold_positions=(1, 1))
    with pytest.raises(ValueError, match="distractors"):
        MDQA(source="files", distractors="bm25")
    assert MDQA(mode="closedbook", gold_positions=()).label() == "mdqa_closedbook"
    assert official_path(20, 9) == (
        "qa_data/20_total_documents/nq-open-20_total_documents_gold_at_9.jsonl.gz"
    )


def write_gz(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def test_data_errors_name_file_line_and_field(tmp_path):
    good = json.dumps(
        {"question": "q", "answers": ["a"], "ctxs": [{"title": "t", "text": "x", "isgold": True}]}
    )
    bad_json = write_gz(tmp_path / "bad.jsonl.gz", [good, "{not json"])
    with pytest.raises(DataError, match=r"bad\.jsonl\.gz:2: invalid JSON"):
        list(built(data_path=str(bad_json)).samples())
    no_answers = write_gz(tmp_path / "noans.jsonl.gz", [json.dumps({"question": "q", "ctxs": []})])
    with pytest.raises(UserError, match=r"noans\.jsonl\.gz:1: field 'answers': is required"):
        list(built(data_path=str(no_answers)).samples())
    no_title = write_gz(
        tmp_path / "notitle.jsonl.gz",
        [json.dumps({"question": "q", "answers": ["a"], "ctxs": [{"text": "x"}]})],
    )
    with pytest.raises(UserError, match=r"notitle\.jsonl\.gz:1: field 'ctxs.0.title': is required"):
        list(built(data_path=str(no_title)).samples())


def test_context_tokens_recorded_with_a_tokenizer():
    sample = next(iter(built(tokenizer="char").samples()))
    assert sample.meta["context_tokens"] >= len(sample.messages[0]["content"])


# --------------------------------------------------------------------------- real oracle file


def test_real_oracle_20_documents():
    path = shared_file("lost-in-the-middle", "nq-open-oracle.jsonl.gz")
    bench = MDQA(data_path=str(path), num_questions=40)  # verify=True checks the pinned hashes
    samples = list(bench.samples())
    assert len(samples) == 40 * 6 and bench.label() == "mdqa_20docs"
    assert {s.meta["gold_position"] for s in samples} == {0, 1, 4, 9, 14, 19}
    for s in samples[:60]:
        lines = docs_of(s.messages[0]["content"])
        assert len(lines) == 20
        g = s.meta["gold_position"]
        assert all(not contains_answer(ln, s.answers) for i, ln in enumerate(lines) if i != g)
        assert bench.score(s, s.answers[0])["best_subspan_em"] == 1.0
