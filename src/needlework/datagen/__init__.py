"""Stage 1: synthetic finetuning data. Importing this package registers every generator."""

from needlework.registry import discover

discover(__name__, __path__)
