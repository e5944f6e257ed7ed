"""Stage 1: synthetic finetuning data. Importing this package registers every generator."""
