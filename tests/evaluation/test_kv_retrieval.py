"""KV retrieval: needlework eval rows (value, dictionary, both) and the Lost-in-the-Middle files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import shared_file

from needlework.errors import DataError, UserError
from needlework.evaluation.benchmarks.kv_retrieval import KVRetrieval, kv_prompt, move_record

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EVAL = FIXTURES / "kv_eval_tiny.jsonl"
LITM = FIXTURES / "kv_litm_5_keys_tiny.jsonl"


def test_kv_prompt_golden():
    # Lost in the Middle's own test string
    data = [
        ("test key1", "test value1"),
        ("test key2", "test value2"),
        ("test key3", "test value3"),
    ]
    expected = "\n".join(
        [
            "Extract the value corresponding to the specified key in the JSON object below.",
            "",
            "JSON data:",
            '{"test key1": "test value1",',
            ' "test key2": "test value2",',
            ' "test key3": "test value3"}',
            "",
            'Key: "test key2"',
            "Corresponding value:",
        ]
    )
    assert kv_prompt(data, "test key2") == expected
    aware = kv_prompt(data, "test key2", query_aware=True)
    assert aware.startswith(
        "Extract the value corresponding to the specified key in the JSON object below.\n\n"
        'Key: "test key2"\n\nJSON data:\n{"test key1"'
    )
    assert aware.endswith('\n\nKey: "test key2"\nCorresponding value:')


def test_move_record():
    records = (("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"))
    assert move_record(records, "c", 0) == [("c", "3"), ("a", "1"), ("b", "2"), ("d", "4")]
    assert move_record(records, "a", 3) == [("b", "2"), ("c", "3"), ("d", "4"), ("a", "1")]


def test_needlework_rows():
    bench = KVRetrieval(data_path=str(EVAL))
    samples = list(bench.samples())
    assert len(samples) == 8 and bench.label() == "kv_retrieval"
    assert bench.primary_metric == "both_correct"
    for s in samples:
        assert len(s.messages) == 1 and s.messages[0]["role"] == "user"
        assert s.id.startswith("simple_dict_kv-0-eval-")
        assert bench.score(s, s.answers[0]) == {
            "value_correct": 1.0,
            "dict_correct": 1.0,
            "both_correct": 1.0,
            "value_in_output": 1.0,
            "format_match": 1.0,
        }
    s = samples[0]
    key, value, name = s.meta["gold_key"], s.meta["gold_value"], s.meta["gold_dict_name"]
    other = str(int(name) % 4 + 1)
    wrong_dict = f"The value of key {key} is {value} and it is in Dictionary [{other}]."
    assert bench.score(s, wrong_dict)["both_correct"] == 0.0
    assert bench.score(s, wrong_dict)["value_correct"] == 1.0
    assert bench.score(s, f"{value} (dictionary {name})")["both_correct"] == 1.0
    assert bench.score(s, f"The value of key {key} is 1 and it is in Dictionary [{name}].") == {
        "value_correct": 0.0,
        "dict_correct": 1.0,
        "both_correct": 0.0,
        "value_in_output": 0.0,
        "format_match": 1.0,
    }
    assert bench.score(s, f"{value} (dictionary {name})")["format_match"] == 0.0


def test_needlework_depth_bins():
    samples = list(KVRetrieval(data_path=str(EVAL), depth_bins=3).samples())
    for s in samples:
        expected = min(int(s.meta["gold_position"] / 3 * 3), 2) / 3
        assert s.meta["gold_depth_bin"] == pytest.approx(expected, abs=1e-6)


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_needlework_row_errors(tmp_path):
    rows = [json.loads(line) for line in EVAL.read_text().splitlines()][:3]
    del rows[2]["meta"]["gold_value"]
    path = write_rows(tmp_path / "e.jsonl", rows)
    with pytest.raises(UserError, match=r"e\.jsonl:3: field 'meta.gold_value': is required"):
        list(KVRetrieval(data_path=str(path)).samples())
    rows = [json.loads(line) for line in EVAL.read_text().splitlines()][:2]
    rows[1]["messages"] = rows[1]["messages"][:1]
    path = write_rows(tmp_path / "m.jsonl", rows)
    with pytest.raises(UserError, match=r"m\.jsonl:2: field 'messages': the conversation must end"):
        list(KVRetrieval(data_path=str(path)).samples())


def test_litm_fixture_with_gold_positions():
    bench = KVRetrieval(data_path=str(LITM), source="lost_in_the_middle", gold_positions=(0, 4))
    samples = list(bench.samples())
    assert len(samples) == 6 * 2 and bench.primary_metric == "substring_match"
    rows = [json.loads(line) for line in LITM.read_text().splitlines()]
    for s in samples:
        row = rows[int(s.id.split("-")[-2])]
        lines = s.messages[0]["content"].split("\n")[3:8]
        g = s.meta["gold_position"]
        assert f'"{row["key"]}": "{row["value"]}"' in lines[g]
        others = [pair for pair in row["ordered_kv_records"] if pair[0] != row["key"]]
        rest = [ln for i, ln in enumerate(lines) if i != g]
        assert all(f'"{k}": "{v}"' in ln for (k, v), ln in zip(others, rest))
        assert bench.score(s, f"{s.answers[0].upper()}") == {"substring_match": 1.0}
        assert bench.score(s, "unknown") == {"substring_match": 0.0}
    assert {s.meta["gold_position"] for s in samples} == {0, 4}


def test_litm_errors_and_validation(tmp_path):
    with pytest.raises(ValueError, match="gold_positions"):
        KVRetrieval(data_path=str(EVAL), gold_positions=(0,))
    too_far = KVRetrieval(data_path=str(LITM), source="lost_in_the_middle", gold_positions=(5,))
    with pytest.raises(DataError, match=r":1: gold position 5 but only 5 records"):
        list(too_far.samples())
    bad = write_rows(
        tmp_path / "kv.jsonl",
        [{"ordered_kv_records": [["a", "1"], ["b", "2"]], "key": "c", "value": "3"}],
    )
    with pytest.raises(UserError, match=r"kv\.jsonl:1: field 'ordered_kv_records': expected"):
        list(KVRetrieval(data_path=str(bad), source="lost_in_the_middle").samples())


@pytest.mark.parametrize("keys", [75, 140])
def test_real_litm_files(keys):
    path = shared_file("lost-in-the-middle", f"kv-retrieval-{keys}_keys.jsonl.gz")
    bench = KVRetrieval(
        data_path=str(path),
        source="lost_in_the_middle",
        num_samples=20,
        gold_positions=(0, keys // 2, keys - 1),
    )
    samples = list(bench.samples())
    assert bench.label() == f"kv_retrieval_litm{keys}" and len(samples) == 60
    for s in samples:
        text = s.messages[0]["content"]
        assert text.count('": "') == keys
        assert text.endswith(f'Key: "{s.meta["gold_key"]}"\nCorresponding value:')
        assert bench.score(s, s.answers[0])["substring_match"] == 1.0
    full = list(KVRetrieval(data_path=str(path), source="lost_in_the_middle").samples())
    assert len(full) == 500
