"""The training-backend contract: validated chat rows in, a loadable model description out.

A backend is a registered frozen dataclass (``@trainers.register("hf_sft")``) whose fields are its
config. :func:`needlework.training.api.train` reads and validates the data, prepares the run folder,
then calls ``preflight`` (cheap checks, before anything expensive) and ``train``. The dict that
``train`` returns is written as the run folder's ``model.json`` (docs/formats.md §B).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from needlework.training.config import TrainConfig
    from needlework.training.data import ChatRow


class Trainer(Protocol):
    """A training backend (``hf_sft``, ``openai``)."""

    def preflight(self, cfg: TrainConfig) -> None:
        """Fail fast with a one-line UserError: missing API key, model path, GPU for QLoRA..."""
        ...

    def train(
        self, cfg: TrainConfig, run_dir: Path, rows: list[ChatRow], *, resume: bool
    ) -> dict[str, Any]:
        """Train on ``rows``, write artifacts under ``run_dir``; return the model.json content."""
        ...
