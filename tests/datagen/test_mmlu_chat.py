"""mmlu_chat: MMLU dev/val questions as chat rows for mixing (never test), one question per
sample of a seed, correct letter and text, byte-identical reruns, one-line errors."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import pytest
from tests.datagen.test_baselines import cfg_for, rows_of, snapshot

from needlework.datagen.pipeline import generate
from needlework.errors import UserError
from needlework.io import read_jsonl

LETTERS = "ABCD"


def _csv(rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    return buf.getvalue().encode("utf-8")


@pytest.fixture(scope="module")
def tarball(tmp_path_factory) -> Path:
    """The MMLU release layout: two subjects, dev 3 + val 4 questions each, and a test split
    whose questions must never appear (its answers are all marked ``TEST``)."""
    path = tmp_path_factory.mktemp("mmlu") / "mmlu_data_csv.tar.gz"
    files: dict[str, bytes] = {}
    for subject in ("astronomy", "botany"):
        for split, n in (("dev", 3), ("val", 4), ("test", 5)):
            rows = []
            for i in range(n):
                tag = "TEST" if split == "test" else f"{subject}-{split}-{i}"
                ans = i % 4
                choices = [f"{tag} choice {k}" for k in range(4)]
                choices[ans] = f"{tag} right"
                rows.append([f"Question {tag}?\n", *choices, LETTERS[ans]])
            files[f"mmlu/{split}/{subject}_{split}.csv"] = _csv(rows)
    files["mmlu/val/long_val.csv"] = _csv([[" ".join(["word"] * 300), "a", "b", "c", "d", "A"]])
    with tarfile.open(path, "w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def gen(tarball: Path, **kw) -> dict:
    return {"name": "mmlu_chat", "data_path": str(tarball.parent), **kw}


def test_rows_answer_with_the_right_letter_and_never_use_test(tmp_path, tarball):
    generate(cfg_for(tmp_path / "a", gen(tarball), num_train=10, num_eval=4))
    rows = rows_of(tmp_path / "a")
    questions = [r["messages"][0]["content"].split("\n")[0] for r in rows]
    assert len(set(questions)) == 14  # one distinct question per sample
    for row in rows:
        user, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        assert "TEST" not in user and "word word" not in user  # no test split, length cap
        letter = answer.split(".")[0]
        assert letter == row["meta"]["answer_letter"]
        assert f"\n{letter}. " in user and answer.endswith("right")
        assert f"{letter}. {answer[3:]}" in user
        assert row["meta"]["mmlu_split"] in ("dev", "val")
        assert user.startswith("Question ") and "?\n\nA. " in user  # stripped question


def test_same_seed_same_bytes_other_seed_other_order(tmp_path, tarball):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        generate(cfg_for(tmp_path / name, gen(tarball), num_train=6, num_eval=2, seeds=[seed]))
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    first = [r["messages"][0]["content"] for r in rows_of(tmp_path / "a")]
    other = [r["messages"][0]["content"] for r in read_jsonl(tmp_path / "c/seed1/train.jsonl")]
    assert first[:6] != other


def test_too_many_samples_and_missing_file_are_one_line_errors(tmp_path, tarball):
    with pytest.raises(UserError, match=r"num_train: 14 MMLU dev\+val questions"):
        generate(cfg_for(tmp_path / "big", gen(tarball), num_train=14, num_eval=1))
    assert not (tmp_path / "big").exists()
    with pytest.raises(UserError, match="mmlu_data_csv.tar.gz not found at"):
        generate(cfg_for(tmp_path / "none", gen(tarball, data_path=str(tmp_path / "nowhere"))))
    bad = tmp_path / "bad" / "mmlu_data_csv.tar.gz"
    bad.parent.mkdir()
    bad.write_bytes(tarball.read_bytes()[:200])  # truncated download
    with pytest.raises(UserError, match=rf"^{bad}: not a readable MMLU release tarball"):
        generate(cfg_for(tmp_path / "trunc", gen(bad)))
    assert not (tmp_path / "trunc").exists()
    with pytest.raises(UserError, match="splits"):
        generate(cfg_for(tmp_path / "t", gen(tarball, splits=["test"])))
