"""Stage 3: evaluation. Importing this package registers every benchmark."""

from needlework.evaluation import benchmarks
from needlework.registry import discover

discover(benchmarks.__name__, benchmarks.__path__)
