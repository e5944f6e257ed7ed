"""The ``needlework train`` config: which backend trains, on which data, into which run folder.

YAML shape (docs/formats.md §B)::

    trainer:                 # a registered training backend: hf_sft or openai
      name: hf_sft
      model_path: mistralai/Mistral-7B-Instruct-v0.1
      ...
    train_path: data/simple_dict_kv/seed0/train.jsonl
    out_dir: runs/train/mistral7b-simple-kv-seed0
    seed: 0

Backend knobs live in the backend unit; what every backend shares (data, mixing, run folder, seed)
lives here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from pydantic import Field

from needlework.config import NonEmptyStr, PositiveInt, Seed, config
from needlework.registry import trainers

if TYPE_CHECKING:
    from needlework.training.data import ChatRow


class Trainer(Protocol):
    """A training backend (``hf_sft``, ``openai``): a registered config unit whose fields are
    its settings. :func:`needlework.training.api.train` reads and validates the data, prepares
    the run folder, then calls ``preflight`` (cheap checks, before anything expensive) and
    ``train``, whose dict is written as the run folder's ``model.json`` (docs/formats.md §B)."""

    def preflight(self, cfg: TrainConfig) -> None:
        """Fail fast with a one-line UserError: missing API key, model path, GPU for QLoRA..."""
        ...

    def train(
        self, cfg: TrainConfig, run_dir: Path, rows: list[ChatRow], *, resume: bool
    ) -> dict[str, Any]:
        """Train on ``rows``, write artifacts under ``run_dir``; return the model.json content."""
        ...


@config
class MixDataset:
    """A chat dataset read with ``datasets.load_dataset``: a hub id (online) or a local dataset
    folder, whose rows have ``messages`` (or conversational ``prompt``/``completion``)."""

    path: NonEmptyStr
    """Hub id (e.g. HuggingFaceH4/ultrachat_200k) or a local folder of JSONL/Parquet files."""
    split: str = "train"
    """Split to read (ultrachat_200k: train_sft)."""
    revision: str | None = None
    """Hub commit sha or tag to pin the dataset to; None = the hub's current one."""
    limit: PositiveInt | None = 20000
    """Read only the first N rows of the split (a 200K-row set need not be read whole)."""


@config
class TrainConfig:
    """Everything ``needlework train`` needs; the resolved copy is saved as ``config.yaml``."""

    trainer: Annotated[Trainer, trainers]
    """Training backend unit: ``hf_sft`` (TRL/PEFT, local or multi-GPU) or ``openai`` (API)."""
    train_path: Path
    """Chat JSONL: rows with ``messages`` [user, assistant] (docs/formats.md §A ``train.jsonl``), or
    conversational ``prompt``/``completion`` rows."""
    out_dir: Path
    """Run folder: config.yaml, run.json, train_log.jsonl, model/, model.json."""
    seed: Seed = 0
    """Seeds the data mix/shuffle, model init (tiny models) and the trainer."""
    variant: str | None = None
    """Label reports group this run under (``needlework run`` sets the recipe's variant name);
    None: the trained model's id."""
    mix_path: Path | None = None
    """Another chat JSONL mixed into the synthetic data (e.g. a general instruction set)."""
    mix_dataset: MixDataset | None = None
    """Instead of ``mix_path``: a hub or local ``datasets`` chat dataset to mix in."""
    mix_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Share of the final training rows drawn from the mix source, in [0, 1); 0 mixes nothing in
    (a ratio sweep's first point may keep the source so its configs differ in the ratio only)."""
    limit: PositiveInt | None = None
    """Use only the first N rows of ``train_path`` (quick dry runs)."""

    def __post_init__(self) -> None:
        if self.mix_path is not None and self.mix_dataset is not None:
            raise ValueError("mix_dataset: give mix_path or mix_dataset, not both")
        if self.mix_ratio > 0 and self.mix_path is None and self.mix_dataset is None:
            raise ValueError("mix_ratio: > 0 needs mix_path or mix_dataset (the data to mix in)")
