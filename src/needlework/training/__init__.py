"""Stage 2: finetuning. Importing this package registers every training backend."""

from needlework.training import hf_sft, openai  # noqa: F401  (registers the units)
