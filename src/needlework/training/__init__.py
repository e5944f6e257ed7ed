"""Stage 2: finetuning. Importing this package registers every training backend."""

from needlework.registry import discover

discover(__name__, __path__)
