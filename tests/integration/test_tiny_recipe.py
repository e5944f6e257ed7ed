"""The whole chain on CPU: `needlework run` on the tiny recipe, then again to show it resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.conftest import shared_file

from needlework.experiment import run_recipe
from needlework.models import read_model_json

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "recipes" / "tiny_cpu.yaml"


@pytest.mark.slow
def test_tiny_recipe_end_to_end_and_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    oracle_dir = shared_file("lost-in-the-middle", "nq-open-oracle.jsonl.gz").parent
    out = tmp_path / "exp"
    overrides = [
        f"out_dir={out}",
        "datasets.tiny_kv.overrides=[num_train=64,num_eval=16]",
        'variants.ft_template.overrides=["trainer.max_steps=12"]',
        'eval_overrides=["limit=6", "benchmarks.niah.context_lengths=[512]", '
        f'"benchmarks.mdqa.data_path={oracle_dir}", "benchmarks.mdqa.download=false"]',
    ]
    log: list[str] = []
    run_recipe(RECIPE, overrides, echo=log.append)
    assert len(log) == 6 and not any("skipped" in line for line in log), log

    trained = read_model_json(out / "train/ft_template/seed0/model.json")  # ./ paths resolved
    assert trained["name"] == "hf" and Path(trained["path"]).is_dir()
    for folder, variant in (("eval/base", "base"), ("eval/ft_template/seed0", "ft_template")):
        for label in ("kv_retrieval", "niah", "mdqa_5docs"):
            run = out / folder / label
            metrics = json.loads((run / "metrics.json").read_text())
            info = json.loads((run / "run.json").read_text())
            assert metrics["n"] == 6 and info["variant"] == variant, run
            assert len((run / "predictions.jsonl").read_text().splitlines()) == 6
    report = (out / "report" / "report.md").read_text()
    assert "ft_template" in report and "base" in report
    assert list((out / "report" / "figures").glob("*.png"))

    # Second run: every step but the report is recognised as done and skipped.
    log.clear()
    run_recipe(RECIPE, overrides, echo=log.append)
    assert sum("done, skipped" in line for line in log) == 5, log

    # The same experiment with --jobs 2: model steps in processes of their own, as soon as what
    # they read is done; the same predictions and scores as one step after the other.
    par = tmp_path / "par"
    log.clear()
    run_recipe(RECIPE, [f"out_dir={par}", *overrides[1:]], jobs=2, echo=log.append)
    assert sum("(running, log " in line for line in log) == 3, log  # eval base, train, eval
    logs = sorted(p.name for p in (par / "logs").iterdir())
    assert logs == ["step03.log", "step04.log", "step05.log"], logs
    preds = sorted(out.glob("eval/**/predictions.jsonl"))
    assert len(preds) == 6
    for pred in preds:
        twin = par / pred.relative_to(out)
        same = pred.read_bytes().replace(str(out).encode(), str(par).encode())  # the folder
        assert twin.read_bytes() == same, twin
        scores = [json.loads((p.parent / "metrics.json").read_text()) for p in (pred, twin)]
        assert scores[0]["metrics"] == scores[1]["metrics"], twin
