"""structured_records: JSON lines and tables parse back into the records, ids are unique, the gold
id occurs once, and the answer can be re-derived from the prompt alone."""

from __future__ import annotations

import json
import random
import re

import pytest
from tests.datagen.generate_twice import generate_twice

from needlework.config import validate
from needlework.datagen.structured_records import StructuredRecords
from needlework.errors import ConfigError
from needlework.io import read_jsonl

HEADS = {
    "json": "Do a task using the list of records below.\n\n",
    "table": "Do a task using the table of records below.\n\n",
}
TAILS = {
    "json": "\n\nAbove is a list of records, one JSON object per line, such that each record has "
    "an integer id and integer fields. Report the {f} of the record with id {i}.",
    "table": "\n\nAbove is a table of records, a header line and then one record per line with "
    'its columns separated by "|", such that each record has an integer id and integer fields. '
    "Report the {f} of the record with id {i}.",
}
TEMPLATE = (
    " Answer in the following template:\nThe {f} of the record with id {i} is <fill-in-value>."
)
ANSWER = "The {f} of the record with id {i} is {v}."


def parse(prompt: str, fmt: str, tmpl: bool) -> tuple[list[dict[str, int]], str, str]:
    """The records (in order), the asked field and the asked id; checks every byte."""
    m = re.search(r"Report the (\w+) of the record with id (\d+)\.", prompt)
    assert m
    field, rid = m.group(1), m.group(2)
    tail = TAILS[fmt].format(f=field, i=rid) + (TEMPLATE.format(f=field, i=rid) if tmpl else "")
    assert prompt.startswith(HEADS[fmt]) and prompt.endswith(tail)
    lines = prompt[len(HEADS[fmt]) : len(prompt) - len(tail)].split("\n")
    if fmt == "json":
        records = [json.loads(line) for line in lines]
        assert [json.dumps(r) for r in records] == lines  # one compact object per line
    else:
        header = lines[0].split(" | ")
        records = []
        for line in lines[1:]:
            cells = line.split(" | ")
            assert len(cells) == len(header) and all(c.isdigit() for c in cells), line
            records.append(dict(zip(header, map(int, cells))))
        assert " | ".join(header) == lines[0]
    names = list(records[0])
    assert names[0] == "id" and all(list(r) == names for r in records)  # fixed field order
    return records, field, rid


def solve(prompt: str, fmt: str, tmpl: bool) -> tuple[str, int]:
    """Answer from the prompt text: (answer, 0-based row of the gold record)."""
    records, field, rid = parse(prompt, fmt, tmpl)
    rows = [i for i, r in enumerate(records) if r["id"] == int(rid)]
    assert len(rows) == 1
    return ANSWER.format(f=field, i=rid, v=records[rows[0]][field]), rows[0]


@pytest.mark.parametrize("fmt", ["json", "table"])
@pytest.mark.parametrize("tmpl", [True, False])
def test_answer_is_derivable_and_the_record_unique(fmt, tmpl):
    gen = StructuredRecords(format=fmt, answer_template=tmpl)
    fields_seen = set()
    for seed in range(25):
        rng = random.Random(seed)
        pos = rng.randrange(30)
        t = gen.build(rng, 30, pos)
        answer, row = solve(t.prompt, fmt, tmpl)
        assert t.answer == answer and row == pos == t.meta["gold_position"]
        assert t.meta["gold_dict_name"] == str(pos + 1) and t.meta["num_records"] == 30
        records, field, rid = parse(t.prompt, fmt, tmpl)
        assert len(records) == 30 and len({r["id"] for r in records}) == 30  # unique ids
        assert field == t.meta["gold_field"] and int(rid) == t.meta["gold_record_id"]
        assert records[pos][field] == t.meta["gold_value"]
        names = list(records[0])[1:]
        assert names == t.meta["field_names"] and len(names) == 3
        assert names == [n for n in StructuredRecords().field_names if n in names]
        fields_seen.add(field)
        body = t.prompt.split("\n\nAbove is")[0]
        assert re.findall(r"\d+", body).count(rid) == 1  # the gold id occurs exactly once
        for r in records:
            assert all(100 <= v <= 9999 for v in r.values())
    assert len(fields_seen) > 4  # the asked field varies


def test_fields_knob_and_custom_names():
    gen = StructuredRecords(fields=5, field_names=("alpha", "beta", "gamma", "delta", "eps"))
    t = gen.build(random.Random(1), 6, 2)
    records, _, _ = parse(t.prompt, "json", True)
    assert list(records[0]) == ["id", "alpha", "beta", "gamma", "delta", "eps"]


def test_template_variants_differ_only_by_the_template():
    for fmt in ("json", "table"):
        a = StructuredRecords(format=fmt, answer_template=True).build(random.Random(3), 9, 4)
        b = StructuredRecords(format=fmt, answer_template=False).build(random.Random(3), 9, 4)
        assert a.answer == b.answer
        f, i = a.meta["gold_field"], a.meta["gold_record_id"]
        assert a.prompt == b.prompt + TEMPLATE.format(f=f, i=i)


def test_formats_show_the_same_records():
    a = StructuredRecords(format="json").build(random.Random(8), 12, 5)
    b = StructuredRecords(format="table").build(random.Random(8), 12, 5)
    assert parse(a.prompt, "json", True)[0] == parse(b.prompt, "table", True)[0]
    assert a.answer == b.answer


def test_same_seed_same_task_other_seed_differs():
    gen = StructuredRecords(format="table")
    assert gen.build(random.Random(11), 20, 7) == gen.build(random.Random(11), 20, 7)
    assert gen.build(random.Random(11), 20, 7) != gen.build(random.Random(12), 20, 7)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"num_records": 1}, "num_records"),
        ({"fields": 0}, "fields"),
        ({"fields": 9}, "fields"),
        ({"field_names": (), "fields": 0}, "fields"),
        ({"field_names": ()}, "field_names"),
        ({"field_names": ("price", "price")}, "field_names"),
        ({"field_names": ("id", "price", "stock")}, "field_names.0"),
        ({"field_names": ("Price", "stock", "code")}, "field_names.0"),
        ({"format": "csv"}, "format"),
        ({"id_digits": (3, 2)}, "id_digits"),
        ({"id_digits": (1, 1), "num_records": 20}, "num_records"),
        ({"value_digits": (0, 2)}, "value_digits.0"),
        ({"frac_0": -0.5}, "frac_0"),
    ],
)
def test_bad_fields_name_themselves(kwargs, field):
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        validate(StructuredRecords, kwargs)


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_generate_end_to_end(tmp_path, fmt):
    out = generate_twice(
        tmp_path, {"name": "structured_records", "num_records": None, "format": fmt}, 900
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"]["0"]["num_records"] >= 2
    for split, n in (("train", 4), ("eval", 2)):
        rows = list(read_jsonl(out / "seed0" / f"{split}.jsonl"))
        assert len(rows) == n
        for row in rows:
            prompt, answer = (m["content"] for m in row["messages"])
            meta = row["meta"]
            assert meta["prompt_tokens"] == len(prompt) < 900 - 20
            assert meta["conversation_tokens"] <= 900
            assert solve(prompt, fmt, True) == (answer, meta["gold_position"])
            assert meta["gold_dict_name"] == str(meta["gold_position"] + 1)
            keys = {"num_records", "gold_record_id", "gold_field", "gold_value", "format"}
            assert keys <= set(meta) and "num_dicts" not in meta


def test_budget_wanting_more_records_than_ids_is_a_user_error(tmp_path):
    """num_records=null with a budget past every distinct id: a one-line UserError naming
    id_digits and max_context_tokens, not build()'s ValueError from inside the search."""
    from needlework.config import load_config
    from needlework.datagen.pipeline import GenerateConfig, generate
    from needlework.errors import UserError

    data = {
        "generator": {"name": "structured_records", "num_records": None, "id_digits": [1, 1]},
        "tokenizer": "char",
        "max_context_tokens": 3000,
        "num_train": 2,
        "num_eval": 1,
        "out_dir": str(tmp_path / "ds"),
    }
    cfg = load_config(GenerateConfig, data=data)
    with pytest.raises(UserError, match=r"^max_context_tokens: .*generator\.id_digits \[1, 1\]"):
        generate(cfg, progress=False)
    assert not list(tmp_path.iterdir())
    # a budget the 9 ids can fill still works
    small = load_config(GenerateConfig, data={**data, "max_context_tokens": 600})
    generate(small, progress=False)
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert 2 <= manifest["seeds"]["0"]["num_records"] < 9
