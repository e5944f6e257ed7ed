"""Hostile input to `needlework report`: undecodable or wrongly shaped run files are listed under
"Problems found" (never a traceback), a failed report leaves no partial output, and ``--out``
never replaces a folder the report did not write."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from needlework.cli import main
from needlework.errors import UserError
from needlework.reporting import sections
from needlework.reporting.report import build_report

from . import fakes

NOT_UTF8 = b"\xff\xfe\xf2 not text \x80\x81"


def _pair(root: Path) -> tuple[Path, Path]:
    """Two small MDQA runs (base, ft) under ``root``."""
    runs = []
    for name, acc in (("base", fakes.acc_base), ("ft", fakes.acc_ft)):
        runs.append(
            fakes.write_run(
                root / name / "mdqa",
                benchmark="mdqa",
                model=f"hf:{name}",
                rows=fakes.mdqa_rows(random.Random(name), acc, per_pos=4),
                primary="best_subspan_em",
                group_by=("gold_position",),
            )
        )
    return runs[0], runs[1]


def _train_run(root: Path, model: object = None) -> Path:
    folder = root / "train"
    folder.mkdir(parents=True)
    model = model if model is not None else {"backend": "hf", "path": "/m", "adapter": None}
    (folder / "model.json").write_text(json.dumps(model))
    return folder


def _problems(result) -> str:
    text = result.path.read_text()
    assert "## Problems found" in text
    return text.split("## Problems found")[1].split("\n## ")[0]


@pytest.mark.parametrize(
    "name", ["metrics.json", "run.json", "config.yaml", "model.json", "trainer_state.json"]
)
def test_a_file_that_is_not_utf8_is_a_problem_line(tmp_path, name):
    _, ft = _pair(tmp_path)
    folder = ft
    if name in ("model.json", "trainer_state.json"):
        folder = _train_run(tmp_path)
    (folder / name).write_bytes(NOT_UTF8)
    result = build_report([tmp_path], tmp_path / "out")
    problems = _problems(result)
    assert f"{folder / name}: " in problems and "not UTF-8" in problems
    if name == "metrics.json":
        assert f"{ft / name}: unreadable JSON (not UTF-8" in problems
        assert "run left out of the report" in problems
        assert "hf:ft" not in result.path.read_text().split("## Runs")[1]


def _suites(root: Path, tasks: object) -> Path:
    """base/ft/ft2 on MDQA and a general suite (enough for the Table-2 comparison); the base
    suite's metrics.json records ``tasks``. Returns that run folder."""
    for i, variant in enumerate(("base", "ft", "ft2")):
        common = {"model": f"hf:{variant}", "variant": variant}
        fakes.write_run(
            root / variant / "mdqa",
            benchmark="mdqa",
            rows=fakes.mdqa_rows(random.Random(i), fakes.acc_ft, per_pos=2),
            primary="best_subspan_em",
            **common,
        )
        fakes.write_run(
            root / variant / "general",
            benchmark="general",
            rows=fakes.general_rows(random.Random(i), 0.5 + i / 10),
            primary="mmlu/acc",
            extra={
                "label": "general",
                "tasks": {"mmlu": {"primary_metric": "mmlu/acc"}} if i else tasks,
            },
            **common,
        )
    return root / "base" / "general"


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("tasks", {"mmlu": "x"}, r"field 'tasks\.mmlu': expected .*, got 'x'"),
        ("tasks", ["mmlu"], "field 'tasks': expected a mapping"),
        ("by", None, "field 'by': expected a mapping, got None"),
    ],
)
def test_a_wrongly_shaped_suite_is_left_out_with_a_problem_line(tmp_path, field, value, says):
    run = _suites(tmp_path, {"mmlu": {"primary_metric": "mmlu/acc"}})
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, field: value}))
    result = build_report([tmp_path], tmp_path / "out", baseline="ft")
    problems = _problems(result)
    where = re.escape(f"{run / 'metrics.json'}: ")
    assert re.search(f"{where}{says}; run left out of the report", problems)
    assert str(run) not in result.path.read_text().split("## Runs")[1]


def test_a_failed_report_leaves_no_partial_output(tmp_path, monkeypatch):
    _pair(tmp_path / "runs")
    out = tmp_path / "out"

    def crash(b):
        raise RuntimeError("boom")

    monkeypatch.setattr(sections, "training_section", crash)  # after tables and figures
    with pytest.raises(RuntimeError, match="boom"):
        build_report([tmp_path / "runs"], out)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # no staging leftovers
    monkeypatch.undo()
    build_report([tmp_path / "runs"], out, html=True)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(sections, "training_section", crash)
    with pytest.raises(RuntimeError, match="boom"):
        build_report([tmp_path / "runs"], out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "runs"]


def test_out_is_refused_when_it_holds_something_else(tmp_path, capsys, monkeypatch):
    _pair(tmp_path / "runs")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my own notes\n")
    (mine / "data.csv").write_text("1,2\n")
    with pytest.raises(UserError, match="not written by needlework report.*refusing"):
        build_report([tmp_path / "runs"], mine)
    assert main(["report", str(tmp_path / "runs"), "--out", str(mine)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--out {mine}:" in err
    assert (mine / "report.md").read_text() == "my own notes\n"
    assert sorted(p.name for p in mine.iterdir()) == ["data.csv", "report.md"]
    # an earlier report with a file of the user's added is not replaced either
    build_report([tmp_path / "runs"], tmp_path / "rep")
    (tmp_path / "rep" / "tables" / "notes.txt").write_text("keep me\n")
    with pytest.raises(UserError, match=r"it holds tables/notes\.txt"):
        build_report([tmp_path / "runs"], tmp_path / "rep")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="exists and is not a folder"):
        build_report([tmp_path / "runs"], tmp_path / "file")
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")  # replacing it would pull the folder from under us
    for out in (".", ".."):
        with pytest.raises(UserError, match="is the current folder or holds it"):
            build_report([tmp_path / "runs"], out)


def test_a_rerun_replaces_its_own_earlier_report(tmp_path):
    _pair(tmp_path / "runs")
    out = tmp_path / "out"
    first = build_report([tmp_path / "runs"], out, html=True)
    assert (out / "report.html").is_file()
    again = build_report([tmp_path / "runs"], out)  # into its own output, without --html
    assert again.path == out / "report.md" and again.path.read_text() == first.path.read_text()
    assert not (out / "report.html").exists()  # nothing stale left from the first run
    assert all(f.is_file() and out in f.parents for f in again.files)
    (tmp_path / "empty").mkdir()
    assert build_report([tmp_path / "runs"], tmp_path / "empty").path.is_file()
    probe = tmp_path / "probe"
    probe.mkdir()
    assert out.stat().st_mode == probe.stat().st_mode  # not mkdtemp's 0700


def test_garbage_log_and_model_json_are_problem_lines(tmp_path):
    _pair(tmp_path)
    train = _train_run(tmp_path, model=[])
    (train / "train_log.jsonl").write_text("not json at all\n")
    result = build_report([tmp_path], tmp_path / "out")
    problems = _problems(result)
    assert f"{train / 'model.json'}: expected " in problems
    assert "; the model is shown as unknown" in problems
    assert f"{train / 'train_log.jsonl'}:1: invalid JSON" in problems


def test_misshapen_records_are_one_problem_line_naming_file_field_and_value(tmp_path):
    """Each run file is validated against its record (docs/formats.md §R); what fails is left
    out with the schema's one line, and the rest of the report is still drawn."""
    base, ft = _pair(tmp_path)
    lines = (ft / "predictions.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    row["scores"]["best_subspan_em"] = "yes"
    (ft / "predictions.jsonl").write_text("\n".join([*lines[:2], json.dumps(row), *lines[3:]]))
    metrics = json.loads((base / "metrics.json").read_text())
    (base / "metrics.json").write_text(json.dumps({**metrics, "primary_metric": "accuracy"}))
    (base / "run.json").write_text(json.dumps({"variant": 3}))
    train = _train_run(tmp_path, model={"path": "/m"})
    result = build_report([tmp_path], tmp_path / "out")
    problems = _problems(result)
    assert (
        f"{ft / 'predictions.jsonl'}:3: field 'scores.best_subspan_em': expected float, "
        "got 'yes'; predictions of this run ignored"
    ) in problems
    assert f"{base / 'run.json'}: field 'variant': expected str, got 3; its variant" in problems
    assert f"{train / 'model.json'}: field 'backend': is required but missing" in problems
    assert (
        f"{base / 'metrics.json'}: field 'primary_metric': 'accuracy' has no entry in "
        "'metrics'; run left out of the report"
    ) in problems
    assert "hf:ft" in result.path.read_text().split("## Runs")[1]  # the other run is reported
