"""Stage 2: finetuning. Importing this package registers every training backend."""
