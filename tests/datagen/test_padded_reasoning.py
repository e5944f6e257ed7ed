"""padded_reasoning: every invariant over every generated row of a small grid (label = ground
truth, key paragraphs once at their spans and made of restatements only, padding free of the
problem's entities, lengths within tolerance with the named tokenizer), same bytes on a rerun,
the flenqa benchmark reading the rows, the 'different' skip line, one-line config errors, and
the cell-by-cell agreement report on a synthetic stand-in for the official file."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from pathlib import Path

import pytest

from needlework.cli import main
from needlework.config import load_config, validate
from needlework.datagen import padded_reasoning as pr
from needlework.errors import ConfigError, UserError
from needlework.evaluation.benchmarks.flenqa import FLenQA, Row
from needlework.evaluation.runner import EvalConfig, evaluate
from needlework.io import read_jsonl
from needlework.reporting.report import build_report
from needlework.stats import unpaired_difference
from needlework.tokenization import load_counter

WORDS = (["narrow", "quiet", "old", "wide"], ["river", "road", "bridge", "field", "orchard"])
PLACES = ["near the mill", "past the hill", "under the trees", "by the harbor"]
TEXT = " ".join(  # 240 bland sentences (~2,200 tokens) for 'different' padding, no outside data
    f"The {a} {n} {v} {p}."
    for v in ("lies", "runs", "ends")
    for a in WORDS[0]
    for n in WORDS[1]
    for p in PLACES
)
SMALL = {"ctx_sizes": [250, 500, 1000], "tokenizer": "mistral:v1", "num_problems": 4}


def shared_file(*parts: str) -> Path:
    """A file under $NEEDLEWORK_DATA (make test sets it to ../shared/data), or skip."""
    path = Path(os.environ.get("NEEDLEWORK_DATA") or "/nonexistent").joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (set NEEDLEWORK_DATA to the shared data folder)")
    return path


def config(tmp_path: Path, **changes) -> pr.PaddedReasoning:
    text = tmp_path / "text.txt"
    text.write_text(TEXT, encoding="utf-8")
    data = {**SMALL, "text_path": str(text), "out_dir": str(tmp_path / "out"), **changes}
    return load_config(pr.PaddedReasoning, data=data)


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[pr.PaddedReasoning, list[dict]]:
    cfg = config(tmp_path_factory.mktemp("pr"))
    pr.generate(cfg, progress=False)
    return cfg, list(read_jsonl(cfg.out_dir / pr.ROWS))


def truth(row: dict) -> bool:
    """The answer re-derived from the key sentences (and the rule), by parsing them."""
    if row["dataset"] == "MonoRel":
        (a, rel, b), (c, rel2, a2) = (
            re.fullmatch(r"(.+) is (\w+) than (.+)\.", f).groups() for f in row["facts"]
        )
        x, rel3, y = re.fullmatch(r"Is (.+) (\w+) than (.+)\?", row["assertion/question"]).groups()
        assert rel == rel2 == rel3 and a == a2 and {x, y} == {b, c}  # never compared directly
        return (x, y) == (c, b)  # c < a < b
    if row["dataset"] == "PIR":
        person, room = re.fullmatch(r"(.+) is in (.+)\.", row["facts"][0]).groups()
        room2, stated = re.fullmatch(r"(.+) is (.+)\.", row["facts"][1]).groups()
        person2, asked = re.fullmatch(
            r"Is (.+) in an? (.+) room\?", row["assertion/question"]
        ).groups()
        assert room == room2 and person == person2
        assert any({stated, asked} <= set(f) for f in pr.FAMILIES)  # exclusive: false, not unknown
        return asked == stated
    (rule,) = row["rule"]
    a, b, c = re.fullmatch(r"If X is (\w+) and X is (\w+) then X is (\w+)\.", rule).groups()
    held = {re.fullmatch(r"\w+ is (\w+)\.", f).group(1) for f in row["statement"]}
    assert row["assertion/question"].endswith(f" is {c}.") and row["facts"] is None
    return {a, b} <= held


def check_row(row: dict, cfg: pr.PaddedReasoning, counter) -> None:
    validate(Row, row, source="row")
    assert truth(row) == (row["label"] == "True")
    mixin, spans = row["mixin"], row["key_spans"]
    keys = [mixin[s:e] for s, e in spans]
    for fact, par in zip(row["facts"] or row["statement"], keys):
        allowed = {fact, *(r.format(fact[:-1]) for r in pr.RESTATE), *pr.NEUTRAL}
        assert par.startswith(fact + " ") and set(re.split(r"(?<=\.) ", par)) <= allowed
        assert row["padding_type"] == "duplicate" or mixin.count(par) == 1
    blocks = mixin.split("\n")
    assert [b for b in blocks if b in keys] == keys or row["padding_type"] == "duplicate"
    names = {w for e in row["entities"] for w in e.split()}
    assert all(w in " ".join(keys) for w in names)
    for block in (b for b in blocks if b not in keys):
        if row["padding_type"] == "duplicate":
            assert block in keys
        else:
            assert not set(re.findall(r"[A-Za-z]+", block)) & names, block
    assert counter.count(mixin) == row["mixin_tokens"]
    assert abs(row["mixin_tokens"] - row["ctx_size"]) < cfg.tolerance
    first, last = spans[0][0] == 0, spans[1][1] == len(mixin)
    adjacent = spans[1][0] == spans[0][1] + 1
    expect = {"first": first and adjacent, "last": last and adjacent, "middle": adjacent}
    assert expect.get(row["dispersion"], spans[0][1] < spans[1][0])
    assert (row["generator"], row["generator_version"]) == ("padded_reasoning", pr.VERSION)


def test_every_row_holds_the_invariants(made):
    cfg, rows = made
    counter = load_counter(cfg.tokenizer)
    assert len(rows) == 3 * 4 * 3 * 3 * 4
    for row in rows:
        check_row(row, cfg, counter)
    for task in pr.TASKS:
        labels = {r["sample_id"]: r["label"] for r in rows if r["dataset"] == task}
        assert sorted(labels.values()) == ["False", "False", "True", "True"]  # balanced
    cells = {(r["dataset"], r["ctx_size"], r["padding_type"], r["dispersion"]) for r in rows}
    assert len(cells) == 3 * 3 * 3 * 4


def test_similar_padding_leaves_out_paragraphs_naming_the_problems_people(tmp_path, monkeypatch):
    """With ten first and ten last names most other problems share a name with this one: the
    paragraphs that do never become its padding (with Faker's lists a clash is rare)."""
    few = (("Ann", "Ben", "Cal", "Dee", "Eve", "Fay", "Gus", "Hal", "Ian", "Jo"),) * 2
    monkeypatch.setattr(pr, "names", lambda: few)
    cfg = config(tmp_path, ctx_sizes=[1000], paddings=["similar"], num_problems=6)
    pr.generate(cfg, progress=False)
    rows = list(read_jsonl(cfg.out_dir / pr.ROWS))
    for row in rows:
        check_row(row, cfg, load_counter(cfg.tokenizer))
    words = [
        {w for e in r["entities"] for w in e.split()} for r in rows if r["dataset"] == "MonoRel"
    ]
    assert all(a & b for a in words for b in words)  # every pair of problems shares a name


def test_same_config_same_bytes_other_seed_other_rows(made, tmp_path):
    cfg, _ = made
    again = dataclasses.replace(cfg, out_dir=tmp_path / "again")
    pr.generate(again, progress=False)
    assert (again.out_dir / pr.ROWS).read_bytes() == (cfg.out_dir / pr.ROWS).read_bytes()
    other = dataclasses.replace(cfg, out_dir=tmp_path / "other", seed=1, tasks=("PIR",))
    pr.generate(other, progress=False)
    assert (other.out_dir / pr.ROWS).read_bytes() != (cfg.out_dir / pr.ROWS).read_bytes()


def test_flenqa_benchmark_reads_the_rows_and_gold_scores_one(made, tmp_path):
    cfg, rows = made
    path = str(cfg.out_dir / pr.ROWS)
    samples = list(FLenQA(data_path=path).samples())
    assert len(samples) == len(rows) and samples[0].meta["padding_type"] == rows[0]["padding_type"]
    data = {"gold_answers": True, "benchmarks": [{"name": "flenqa", "data_path": path}]}
    (run,) = evaluate(
        load_config(EvalConfig, data={**data, "out_dir": str(tmp_path)}), progress=False
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n"] == len(rows) and metrics["metrics"]["correct"]["mean"] == 1.0


def test_different_padding_is_skipped_with_one_line_without_text(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("NEEDLEWORK_DATA", raising=False)
    monkeypatch.chdir(tmp_path)  # no data/lost-in-the-middle here
    path = tmp_path / "c.yaml"
    path.write_text("ctx_sizes: [250]\ntokenizer: mistral:v1\nnum_problems: 2\nout_dir: out\n")
    assert main(["generate", "--config", str(path), "--no-progress"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert sum("padding 'different' skipped: no text" in line for line in err) == 1
    rows = list(read_jsonl(tmp_path / "out" / pr.ROWS))
    assert {r["padding_type"] for r in rows} == {"duplicate", "similar"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ctx_sizes": []}, "ctx_sizes"),
        ({"ctx_sizes": [500, 500]}, "ctx_sizes"),
        ({"tasks": ["FLenQA"]}, "tasks.0"),
        ({"paddings": ["books"]}, "paddings.0"),
        ({"dispersions": []}, "dispersions"),
        ({"tolerance": 0}, "tolerance"),
        ({"num_problems": 0}, "num_problems"),
        ({"tokenizer": "bogus"}, "tokenizer"),
    ],
)
def test_bad_config_values_are_one_line_errors(tmp_path, change, field):
    with pytest.raises(ConfigError) as err:
        config(tmp_path, **change)
    assert f"field '{field}'" in str(err.value) and "\n" not in str(err.value)


def test_unreachable_length_and_foreign_out_dir_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match=r"^tolerance: .* closest to 100 tokens") as err:
        pr.generate(config(tmp_path, ctx_sizes=[100], tasks=["PIR"]), progress=False)
    assert "\n" not in str(err.value)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds other files"):
        pr.generate(config(tmp_path), progress=False)


def test_different_padding_from_the_oracle_training_half(tmp_path):
    shared_file("lost-in-the-middle", "nq-open-oracle.jsonl.gz")
    cl100k = shared_file("tokenizers", "cl100k_base.tiktoken")
    cfg = config(
        tmp_path,
        text_path=None,
        tokenizer=f"tiktoken:cl100k_base@{cl100k}",
        ctx_sizes=[3000],
        paddings=["different"],
        num_problems=2,
    )
    pr.generate(cfg, progress=False)
    counter = load_counter(cfg.tokenizer)
    for row in read_jsonl(cfg.out_dir / pr.ROWS):
        check_row(row, cfg, counter)


def test_unpaired_difference():
    d, lo, hi = unpaired_difference([1, 1, 0, 0], [1, 0, 0, 0])
    half = 1.959963984540054 * (0.25 / 4 + 0.1875 / 4) ** 0.5
    assert d == pytest.approx(0.25) and (lo, hi) == pytest.approx((0.25 - half, 0.25 + half))


def test_agreement_cell_by_cell_on_a_stand_in_official_file(made, tmp_path):
    """Official rows (a stand-in: our rows under the released padding names, every label of one
    cell set to True) and re-created rows, both answered "True" by a scripted model: the
    report's cells show the one cell that differs, and no other."""
    cfg, rows = made
    names = {"similar": "same", "different": "books"}
    official = tmp_path / "flenqa_standin.jsonl"
    with official.open("w", encoding="utf-8") as fh:
        for r in rows:
            if r["padding_type"] in names:
                cell = (r["dataset"], r["ctx_size"], r["dispersion"]) == ("PIR", 500, "last")
                r = {**r, "padding_type": names[r["padding_type"]]}
                fh.write(json.dumps({**r, "label": "True"} if cell else r) + "\n")
    model = {"name": "scripted", "mode": "constant", "text": "True"}
    for variant, path, keep in (
        ("official", official, []),
        ("recreated", cfg.out_dir / pr.ROWS, ["similar", "different"]),
    ):
        bench = {"name": "flenqa", "data_path": str(path), "padding_types": keep}
        data = {"model": model, "benchmarks": [bench], "variant": variant}
        cfg_run = load_config(EvalConfig, data={**data, "out_dir": str(tmp_path / variant)})
        evaluate(cfg_run, progress=False)
    result = build_report(
        [tmp_path / "official", tmp_path / "recreated"],
        tmp_path / "report",
        baseline="official",
        cells=("task", "ctx_size", "dispersion"),
    )
    table = list(csv.DictReader((tmp_path / "report" / "tables" / "cells.csv").open()))
    assert len(table) == 3 * 3 * 4
    off = [r for r in table if float(r["delta"]) != 0]
    assert [r["task / ctx_size / dispersion"] for r in off] == ["PIR / 500 / last"]
    assert float(off[0]["base_mean"]) == 1.0 and float(off[0]["mean"]) == 0.5
    text = result.path.read_text()
    assert "36 cells in both (0 in one only)" in text and "excludes 0 in" in text
