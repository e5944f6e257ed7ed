"""A real 2-process launch on CPU (torchrun + gloo): one run folder, written by rank 0 only.

``accelerate launch`` with the shipped DeepSpeed/FSDP configs needs GPUs; this exercises the same
code path under a process group: world size read at launch, global batch split over processes,
the tiny base model built once, only rank 0 writing run files, everyone joining save_model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from needlework.models import read_model_json

pytest.importorskip("trl")

from .helpers import kv_rows, write_rows  # noqa: E402


@pytest.mark.slow
def test_two_process_launch_writes_one_consistent_run(tmp_path):
    data = write_rows(tmp_path / "train.jsonl", kv_rows(32, num_dicts=2))
    run = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "trainer: {name: hf_sft, model_path: 'tiny:llama-h64-l2-a4', bf16: false, max_steps: 4,\n"
        "          per_device_batch_size: 4, global_batch_size: 16, logging_steps: 1,\n"
        f"          save_steps: 2, learning_rate: 1.0e-3}}\ntrain_path: {data}\nout_dir: {run}\n"
    )
    # CPU processes (gloo) even on a GPU machine: two ranks cannot share one GPU.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "needlework",
            "train",
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("needlework train: done") == 1  # printed by rank 0 only
    info = json.loads((run / "run.json").read_text())
    assert info["num_processes"] == 2
    assert info["effective_batch_size"] == 16  # 4 per device x 2 processes x 2 accumulation
    assert read_model_json(run / "model.json")["path"] == str((run / "model").resolve())
    steps = [json.loads(x)["step"] for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps[:-1] == [1, 2, 3, 4]
    # no temp folder left behind; .lock is rank 0's claim on the folder (the other rank takes none)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [".lock"]
    assert (run / "checkpoints" / "checkpoint-4").is_dir()
