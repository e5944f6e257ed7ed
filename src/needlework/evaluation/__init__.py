"""Stage 3: evaluation. Importing this package registers every benchmark."""

from needlework.evaluation.benchmarks import flenqa, general, kv_retrieval, mdqa, niah  # noqa: F401
