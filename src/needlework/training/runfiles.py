"""Names inside a training run folder, and the few helpers every backend uses to write there.

<out_dir>/
  config.yaml, run.json      resolved TrainConfig; versions, data stats, backend ids
  train_log.jsonl/.csv       loss curve (hf_sft); loss.png
  checkpoints/checkpoint-N/  trainer checkpoints (resume)
  base_model/                a tiny: model built in-process (hf_sft)
  model/                     the finetuned model, or the LoRA adapter, with its tokenizer
  merged/                    LoRA merged into the base weights (merge_lora)
  openai_job.json            file id, job id, status, events (openai)
  model.json                 how to load the result (docs/formats.md §B); written last
  .lock                      held by the process training into the folder (api.train)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from needlework import runinfo

MODEL_JSON = "model.json"
RUN_JSON = "run.json"
CHECKPOINTS = "checkpoints"
MODEL_DIR = "model"
MERGED_DIR = "merged"
BASE_DIR = "base_model"


def is_main_process() -> bool:
    """Global rank 0 (``accelerate launch``/torchrun set RANK); a plain run is rank 0."""
    return int(os.environ.get("RANK", "0")) == 0


def update_run_info(run_dir: Path, **extra: Any) -> None:
    """Merge ``extra`` into ``run.json`` (main process only)."""
    if is_main_process():
        runinfo.update_run_info(run_dir, **extra)
