"""generate(): contract layout, determinism, budgets, atomicity and CLI errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from needlework.cli import main
from needlework.config import load_config
from needlework.datagen import pipeline
from needlework.datagen.formatting import SYSTEM_MESSAGE
from needlework.datagen.pipeline import GenerateConfig, generate, iter_rows
from needlework.errors import DataError
from needlework.io import read_jsonl, sha256_file

ROOT = Path(__file__).resolve().parents[2]
META_KEYS = {
    "generator",
    "seed",
    "split",
    "index",
    "prompt_tokens",
    "conversation_tokens",
    "num_dicts",
    "gold_position",
    "gold_depth",
    "gold_dict_name",
    "gold_key",
    "gold_value",
    "answer_template",
    "tokenizer",
    "max_context_tokens",
}


def tiny(out: Path, **changes) -> GenerateConfig:
    data = {
        "generator": {"name": "simple_dict_kv", "num_dicts": None},
        "tokenizer": "char",
        "max_context_tokens": 700,
        "reserve_tokens": 20,
        "seeds": [0],
        "num_train": 12,
        "num_eval": 6,
        "formats": ["openai", "trl"],
        "out_dir": str(out),
    }
    cfg = load_config(GenerateConfig, data=data)
    return dataclasses.replace(cfg, **changes)


def snapshot(folder: Path, skip=("run.json",)) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def test_layout_rows_and_manifest(tmp_path):
    out = tmp_path / "ds"
    cfg = tiny(out, seeds=(0, 1), formats=("openai", "trl", "hf", "parquet"))
    manifest = generate(cfg, progress=False)
    assert manifest["out_dir"] == str(out)
    for seed in (0, 1):
        folder = out / f"seed{seed}"
        train = list(read_jsonl(folder / "train.jsonl"))
        evals = list(read_jsonl(folder / "eval.jsonl"))
        assert len(train) == 12 and len(evals) == 6
        for split, rows in (("train", train), ("eval", evals)):
            for i, row in enumerate(rows):
                assert row["id"] == f"simple_dict_kv-{seed}-{split}-{i}"
                assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
                meta = row["meta"]
                assert set(meta) >= META_KEYS and meta["index"] == i and meta["seed"] == seed
                assert meta["prompt_tokens"] == len(row["messages"][0]["content"])  # char
                assert meta["prompt_tokens"] < 700 - 20 and meta["conversation_tokens"] <= 700
                assert meta["gold_depth"] == round(
                    meta["gold_position"] / (meta["num_dicts"] - 1), 6
                )
                assert meta["gold_dict_name"] == str(meta["gold_position"] + 1)
        prompts = {r["messages"][0]["content"] for r in train}
        assert not prompts & {r["messages"][0]["content"] for r in evals}  # disjoint splits
        oa = list(read_jsonl(folder / "train.openai.jsonl"))
        assert oa[0] == {
            "messages": [{"role": "system", "content": SYSTEM_MESSAGE}, *train[0]["messages"]]
        }
        trl = list(read_jsonl(folder / "train.trl.jsonl"))
        assert trl[3] == {
            "prompt": train[3]["messages"][:1],
            "completion": train[3]["messages"][1:],
        }
        import datasets

        hf = datasets.load_from_disk(str(folder / "hf"))
        assert hf["train"][5]["messages"] == train[5]["messages"]
        assert datasets.Dataset.from_parquet(str(folder / "eval.parquet"))["id"] == [
            r["id"] for r in evals
        ]
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["format"] == "needlework-dataset/1"
    for rel, info in on_disk["files"].items():
        assert sha256_file(out / rel) == info["sha256"], rel
    s = on_disk["seeds"]["0"]["splits"]["train"]
    assert s["n"] == 12 and s["openai"]["n"] == 12 and s["openai"]["over_limit"] == 0
    assert (out / "config.yaml").is_file() and (out / "run.json").is_file()


def test_same_config_same_bytes_and_other_seed_differs(tmp_path):
    out = tmp_path / "ds"
    generate(tiny(out), progress=False)
    first = snapshot(out)
    generate(tiny(out), progress=False)  # replaces the earlier dataset atomically
    assert snapshot(out) == first
    generate(tiny(tmp_path / "other", seeds=(1,)), progress=False)
    a = (out / "seed0" / "train.jsonl").read_text()
    b = (tmp_path / "other" / "seed1" / "train.jsonl").read_text()
    assert a != b and a.count("\n") == b.count("\n")


def test_each_sample_draws_from_its_own_rng(tmp_path):
    """Sample k of a split is the same whichever samples are made with it (a slice of a split
    equals that slice of the whole split), so token matching can size a split by a prefix."""
    from needlework.tokenization import load_counter

    cfg = tiny(tmp_path / "ds", num_train=10, num_eval=5)
    counter = load_counter(cfg.tokenizer)
    sizes = {"train": 10, "eval": 5}
    whole = list(iter_rows(cfg, counter, 3, "train", 4, range(10), sizes))
    assert list(iter_rows(cfg, counter, 3, "train", 4, range(4, 8), sizes)) == whole[4:8]


def test_paper_config_respects_the_budget_under_real_mistral(tmp_path):
    import sentencepiece as spm

    from needlework.tokenization import _mistral_data_dir

    path = ROOT / "configs/datagen/simple_dict_kv_mistral_v1_wtemplate.yaml"
    cfg = load_config(
        GenerateConfig,
        path,
        [f"out_dir={tmp_path / 'ds'}", "seeds=[0]", "num_train=24", "num_eval=8", "formats=[]"],
    )
    generate(cfg, progress=False)
    sp = spm.SentencePieceProcessor(model_file=str(_mistral_data_dir() / "tokenizer.model.v1"))
    rows = list(read_jsonl(tmp_path / "ds" / "seed0" / "train.jsonl"))
    for row in rows:
        prompt, answer = (m["content"] for m in row["messages"])
        n = len(sp.encode(prompt))
        assert row["meta"]["prompt_tokens"] == n and n + 1 < 4096 - 100  # official, BOS incl.
        # <s>[INST] prompt [/INST]answer</s>, counted by the reference encoder
        conv = 1 + len(sp.encode(f"[INST] {prompt} [/INST]")) + len(sp.encode(answer)) + 1
        assert row["meta"]["conversation_tokens"] == conv <= 4096
        assert row["meta"]["num_dicts"] == 85 and prompt.count("\nDictionary [") == 85


def test_budget_search_fills_8k_with_mistral(tmp_path):
    cfg = load_config(
        GenerateConfig,
        ROOT / "configs/datagen/simple_dict_kv_24k_mistral_v02.yaml",
        [
            f"out_dir={tmp_path / 'ds'}",
            "max_context_tokens=8192",
            "num_train=6",
            "num_eval=2",
            "formats=[]",
        ],
    )
    manifest = generate(cfg, progress=False)
    n = manifest["seeds"]["0"]["num_dicts"]
    tokens = manifest["seeds"]["0"]["splits"]["train"]["prompt_tokens"]
    assert 160 <= n <= 190  # ~45 tokens per dictionary
    assert tokens["max"] < 8092 and tokens["min"] > 7500  # full, yet inside the budget


def test_interrupt_leaves_no_partial_output(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    generate(tiny(out), progress=False)
    before = snapshot(out)
    calls = []

    def boom(self, row):
        calls.append(row)
        if len(calls) == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.SplitWriter, "add", boom)
    with pytest.raises(KeyboardInterrupt):
        generate(tiny(out, seeds=(2,)), progress=False)
    assert snapshot(out) == before  # the older dataset is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no staging leftovers


def _cli_fails(args: list[str], capsys, tmp_path: Path, match: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and match in err, err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.fixture
def tiny_yaml(tmp_path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text((ROOT / "configs/datagen/tiny_cpu.yaml").read_text())
    return p


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["max_context_tokens=120", "reserve_tokens=0"], "too small for even num_dicts=2"),
        (["generator.dict_size_range=[4,3]"], "field 'generator.dict_size_range'"),
        (["generator.num_dicts=40"], "do not fit max_context_tokens=800"),
        (["tokenizer=bogus"], "field 'tokenizer'"),
        (["tokenizer=mistral:v9"], "unknown Mistral tokenizer"),
        (["seeds=[]"], "field 'seeds'"),
        (["generator.bogus=1"], "unknown key(s) 'bogus'"),
        (["formats=[xml]"], "field 'formats.0'"),
        (["formats=[trl,trl]"], "field 'formats'"),
        (["system_message="], "field 'system_message'"),
    ],
)
def test_bad_input_exits_2_without_output(overrides, match, tiny_yaml, tmp_path, capsys):
    args = [
        "generate",
        "--config",
        str(tiny_yaml),
        f"out_dir={tmp_path / 'out'}",
        *overrides,
        "--no-progress",
    ]
    _cli_fails(args, capsys, tmp_path, match)


def test_unwritable_or_foreign_output_exits_2(tiny_yaml, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    _cli_fails(
        ["generate", "--config", str(tiny_yaml), f"out_dir={afile / 'sub'}"],
        capsys,
        tmp_path,
        "afile/sub: cannot be created",
    )
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    _cli_fails(
        ["generate", "--config", str(tiny_yaml), f"out_dir={foreign}"],
        capsys,
        tmp_path,
        "holds no needlework dataset",
    )
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_malformed_config_and_bad_num_samples_exit_2(tmp_path, tiny_yaml, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("generator: {name: simple_dict_kv\nout_dir: x\n")
    _cli_fails(["generate", "--config", str(bad)], capsys, tmp_path, "invalid YAML")
    _cli_fails(
        ["generate", "--config", str(tiny_yaml), "--num-samples", "0"],
        capsys,
        tmp_path,
        "--num-samples: expected greater than or equal to 1, got 0",
    )


def test_dataset_folders_get_the_umask_mode(tmp_path, monkeypatch):
    """mkdtemp makes 0700 folders; a finished dataset must be 0o777 & ~umask."""
    import needlework.io

    monkeypatch.setattr(needlework.io, "_UMASK", 0o022)
    out = tmp_path / "ds"
    generate(tiny(out), progress=False)
    assert out.stat().st_mode & 0o777 == 0o755
    generate(tiny(out), progress=False)  # replacing an earlier dataset: same mode
    assert out.stat().st_mode & 0o777 == 0o755
    monkeypatch.setattr(needlework.io, "_UMASK", 0o027)
    folder = needlework.io.make_temp_dir(tmp_path, ".x.", ".tmp")
    assert folder.stat().st_mode & 0o777 == 0o750


def test_cli_generate_and_inspect(tiny_yaml, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            [
                "generate",
                "--config",
                str(tiny_yaml),
                f"out_dir={out}",
                "--num-samples",
                "5",
                "--no-progress",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.strip() == str(out)
    assert len(list(read_jsonl(out / "seed0" / "eval.jsonl"))) == 5
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "10 rows" in text and "gold position" in text and "[assistant] The value of key" in text
    assert main(["inspect", str(tmp_path / "nothing")]) == 2


def test_kill_9_leftovers_are_removed_by_the_next_run_and_sigterm_cleans_up(tmp_path):
    """kill -9 skips every cleanup: the next run removes that staging folder (its lock is
    free) but never a live run's; SIGTERM unwinds like Ctrl-C and leaves nothing."""
    import fcntl
    import os
    import signal
    import subprocess
    import sys
    import time

    from needlework.io import STAGE_LOCK

    out = tmp_path / "ds"
    dead = tmp_path / ".ds.abc.tmp"  # what a killed run leaves: a stage whose lock is free
    dead.mkdir()
    (dead / STAGE_LOCK).touch()
    (dead / "train.jsonl").write_text("{}\n")
    live = tmp_path / ".ds.live.tmp"  # a running generate's stage: its lock is held
    live.mkdir()
    with (live / STAGE_LOCK).open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        generate(tiny(out), progress=False)
        assert not dead.exists() and live.exists()
    # SIGTERM mid-run through the CLI: no staging folder survives
    cfg = tmp_path / "big.yaml"
    cfg.write_text(
        "generator: {name: simple_dict_kv, num_dicts: null}\ntokenizer: char\n"
        "max_context_tokens: 4000\n"
        f"seeds: [0, 1, 2, 3]\nnum_train: 4000\nnum_eval: 10\nout_dir: {tmp_path / 'big'}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "needlework", "generate", "--config", str(cfg)],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".big.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".big.*.tmp")), "generate never started staging"
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not list(tmp_path.glob(".big.*")) and not (tmp_path / "big").exists()


def test_inspect_says_what_a_manifest_or_a_predictions_file_is(tmp_path):
    from needlework.datagen.summary import inspect_data

    manifest = tmp_path / "manifest.json"
    manifest.write_text('{\n "format": "needlework-dataset/1"\n}\n')
    with pytest.raises(DataError, match="a dataset's manifest, not its rows; give its folder"):
        inspect_data(manifest)
    preds = tmp_path / "predictions.jsonl"
    preds.write_text('{"id": "a", "output": "x", "scores": {"m": 1.0}, "messages": []}\n')
    with pytest.raises(DataError, match="a prediction of an eval run"):
        inspect_data(preds)
