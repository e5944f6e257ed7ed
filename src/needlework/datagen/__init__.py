"""Stage 1: synthetic finetuning data. Importing this package registers every generator."""

from needlework.datagen import multi_subkey_dict_kv, simple_dict_kv  # noqa: F401  (registers)
