"""Data sources every stage may read, below the stages: the Lost-in-the-Middle files and other
local data (``data``), MDQA contexts (``mdqa``), haystack text (``haystack``), answer
normalisation (``answers``), MMLU's release files (``mmlu``) and the benchmark prompt texts
(``prompts``). A generator and a benchmark that read the same passages or prompt read them here,
so no stage imports another."""
