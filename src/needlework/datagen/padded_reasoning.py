"""Padded true/false reasoning: evaluation rows built the way "Same Task, More Tokens" (Levy,
Jacoby & Goldberg, ACL 2024, arXiv:2402.14848, §2-3 and App. A) describes building FLenQA, in
FLenQA's schema, so the ``flenqa`` benchmark reads them unchanged. A re-creation, not FLenQA:
names, vocabularies, key paragraphs and background text are ours (docs/datagen.md says which parts
are exact in method and which approximate).

Run:  needlework generate --config configs/datagen/padded_reasoning_paper.yaml

Why a config kind of ``needlework generate`` and not a generator of the registry: generators make
*training* chat rows (one prompt and answer, a token budget searched on a unit count, train/eval
splits), and none of that applies here. These are *evaluation* rows over a grid (task x length x
padding x dispersion x problem), each fitted to a target length. So the same verb reads this
file's config (told apart by its ``ctx_sizes`` key, as ``generator:`` tells a dataset config)
and writes ``<out_dir>/rows.jsonl``; users learn no new command, the pipeline no new mode.

Determinism: problem ``k`` of a task draws only from ``Random("padded_reasoning:<seed>:<task>:
<k>")``, its labels from ``...:<task>:labels``, a row's padding from ``...:<k>:<N>:<padding>``
(shared by the four dispersions, so only the placement differs) and its placement from
``...:<dispersion>``. Same config, same bytes.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import random
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field

from needlework.config import Distinct, PositiveInt, Seed, config
from needlework.errors import DataError, UserError
from needlework.tokenization import TokenCounter, TokenizerSpec, largest_fitting, load_counter

VERSION = 1
"""Recorded in every row; bumped whenever the same config would give other rows."""
ROWS = "rows.jsonl"
MANIFEST_FORMAT = "needlework-padded-reasoning/1"
Task = Literal["MonoRel", "PIR", "Simplified RuleTaker"]
Padding = Literal["duplicate", "similar", "different"]
Dispersion = Literal["first", "middle", "last", "random"]
TASKS: tuple[Task, ...] = get_args(Task)
PADDINGS: tuple[Padding, ...] = get_args(Padding)
DISPERSIONS: tuple[Dispersion, ...] = get_args(Dispersion)

# The paper's lists are unpublished; these are ours. Comparatives: strict orders (transitive and
# asymmetric), so "a < b, c < a" makes "c < b" true and "b < c" false.
COMPARATIVES: tuple[str, ...] = ("younger", "older", "taller", "shorter", "heavier", "lighter")
COMPARATIVES += ("richer", "poorer", "stronger", "weaker", "faster", "slower")
ROOMS: tuple[str, ...] = ("living room", "kitchen", "great hall", "old library", "bedroom")
ROOMS += ("study", "dining room", "attic", "cellar", "guest room", "music room", "workshop")
# A room has exactly one property of each family, so asking for another one of the stated
# property's family is false, never unknown (the paper's mutual exclusivity).
FAMILIES = (
    ("blue-walled", "red-walled", "green-walled", "white-walled", "yellow-walled"),
    ("marble-floored", "wooden-floored", "carpeted", "tile-floored"),
    ("brightly lit", "dimly lit"),
)
ATTRIBUTES: tuple[str, ...] = ("big", "blue", "cold", "furry", "good", "green", "kind", "nice")
ATTRIBUTES += ("quiet", "red", "rough", "round", "smart", "tall", "white", "young")
# Key paragraphs: the key sentence, then restatements of it (``{}`` = the key sentence without
# its period) interleaved with neutral sentences. Neither adds an entity or a fact.
RESTATE: tuple[str, ...] = ("In other words, {}.", "To say it again, {}.", "Put simply, {}.")
RESTATE += ("It is true that {}.", "As stated, {}.", "That is, {}.", "Once more: {}.")
RESTATE += ("Remember that {}.", "Indeed, {}.", "This is the fact: {}.")
NEUTRAL = (
    "This is stated plainly.",
    "There is nothing more to it.",
    "Nothing else is claimed here.",
    "It is worth keeping in mind.",
    "The point is simple.",
    "No further detail is given.",
    "This statement stands on its own.",
    "It is repeated here for clarity.",
    "That is all this paragraph says.",
    "It should be read carefully.",
    "The wording may vary, but the meaning does not.",
    "Each sentence here says the same thing.",
)


@config
class PaddedReasoning:
    """FLenQA-style rows: three true/false tasks, key paragraphs padded to target lengths."""

    ctx_sizes: Annotated[tuple[PositiveInt, ...], Field(min_length=1), Distinct]
    """Target lengths of ``mixin`` (the facts and padding, the official ``ctx_size``) in tokens
    (the paper: 250, 500, 1000, 2000, 3000)."""
    out_dir: Path
    """Output folder: rows.jsonl, config.yaml, run.json, manifest.json (replaced atomically, only
    if empty or an earlier output of this kind)."""
    tokenizer: TokenizerSpec = "tiktoken:cl100k_base"
    """Counts ``mixin`` (the paper: GPT-4's cl100k; or the evaluated model's, e.g. hf:<dir>)."""
    tolerance: PositiveInt = 70
    """A row is of length N when its count is strictly within N +- tolerance (the paper's 70).
    Padding comes in paragraphs or sentences, so 70 holds at any length; raise it for a
    tokenizer whose paragraphs exceed 140 tokens."""
    tasks: Annotated[tuple[Task, ...], Field(min_length=1), Distinct] = TASKS
    """Task names as FLenQA's ``dataset`` field."""
    paddings: Annotated[tuple[Padding, ...], Field(min_length=1), Distinct] = PADDINGS
    """``duplicate``: the key paragraphs repeated; ``similar`` (released as ``same``): key
    paragraphs of other problems of the task; ``different`` (released as ``books``): text_path."""
    dispersions: Annotated[tuple[Dispersion, ...], Field(min_length=1), Distinct] = DISPERSIONS
    """Where the key paragraphs go: first, middle, last, or random (in order, padding between)."""
    num_problems: PositiveInt = 100
    """Problems per task (labels balanced: half True, half False, up to one)."""
    paragraph_tokens: Annotated[int, Field(ge=8)] = 125
    """A key paragraph grows sentence by sentence up to this many tokens (the paper's ~125)."""
    text_path: str | None = None
    """UTF-8 continuous text for ``different`` padding; None = the passages of the training half
    of the Lost-in-the-Middle oracle file (datagen/passages.py: never asked by MDQA), where
    found; else that padding is skipped with one line."""
    seed: Seed = 0
    """Seeds every draw (names, labels, padding, placement)."""


@dataclass(frozen=True)
class Problem:
    """One base instance: two facts, a true/false question about them, its answer."""

    facts: tuple[str, str]
    """The two key sentences."""
    question: str
    label: bool
    entities: tuple[str, ...]
    """Names in the key sentences: padding that mentions a word of one is left out."""
    rule: str | None = None


@functools.cache
def names() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Faker's en_US first and last names (its static lists, drawn with our rng), without any
    that equal a word of our own text (so a name never matches a vocabulary word)."""
    try:
        from faker.providers.person.en_US import Provider
    except ImportError:
        raise UserError("padded_reasoning: needs the faker package (pip install faker)") from None
    ours = (*COMPARATIVES, *ROOMS, *sum(FAMILIES, ()), *ATTRIBUTES, *RESTATE, *NEUTRAL, "X if")
    taken = {w.lower() for text in ours for w in re.findall(r"[A-Za-z]+", text)}

    def keep(found: Any) -> tuple[str, ...]:
        return tuple(sorted(n for n in set(found) if n.isalpha() and n.lower() not in taken))

    return keep(Provider.first_names), keep(Provider.last_names)


def make_problem(task: str, rng: random.Random, label: bool) -> Problem:
    """One base instance; ``label`` says whether the question follows from the facts."""
    firsts, lasts = names()
    if task == "Simplified RuleTaker":
        name = rng.choice(firsts)
        a, b, c, d = rng.sample(ATTRIBUTES, 4)
        held = (a, b) if label else rng.choice([(d, b), (a, d)])  # one condition unmet: False
        facts = (f"{name} is {held[0]}.", f"{name} is {held[1]}.")
        return Problem(
            facts, f"{name} is {c}.", label, (name,), f"If X is {a} and X is {b} then X is {c}."
        )
    if task == "MonoRel":
        a, b, c = (f"{f} {s}" for f, s in zip(rng.sample(firsts, 3), rng.sample(lasts, 3)))
        rel = rng.choice(COMPARATIVES)
        x, y = (c, b) if label else (b, c)  # c < a < b; c and b are never compared directly
        facts = (f"{a} is {rel} than {b}.", f"{c} is {rel} than {a}.")
        return Problem(facts, f"Is {x} {rel} than {y}?", label, (a, b, c))
    person_first, owner = rng.sample(firsts, 2)
    person, room = f"{person_first} {rng.choice(lasts)}", rng.choice(ROOMS)
    stated, other = rng.sample(rng.choice(FAMILIES), 2)
    asked = stated if label else other
    article = "an" if asked[0] in "aeiou" else "a"
    facts = (f"{person} is in {owner}'s {room}.", f"{owner}'s {room} is {stated}.")
    return Problem(facts, f"Is {person} in {article} {asked} room?", label, (person, owner))


def key_paragraph(fact: str, rng: random.Random, counter: TokenCounter, tokens: int) -> str:
    """The key sentence, then restatements and neutral sentences while it stays <= ``tokens``."""
    restate = [r.format(fact[:-1]) for r in rng.sample(RESTATE, len(RESTATE))]
    filler = rng.sample(NEUTRAL, len(NEUTRAL))
    out = [fact]
    for sentence in (s for pair in zip(restate, filler) for s in pair):
        if counter.count(" ".join([*out, sentence])) > tokens:
            break
        out.append(sentence)
    return " ".join(out)


def mentions(words: set[str]) -> Callable[[str], bool]:
    """Whether a text holds one of ``words`` as a whole, case-sensitive word."""
    pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, sorted(words))) + r")\b")
    return lambda text: pattern.search(text) is not None


def arrange(
    keys: tuple[str, str], pad: list[str], where: tuple[int, int], continuous: bool
) -> tuple[str, list[list[int]]]:
    """``mixin`` and the key paragraphs' ``[start, end)`` character spans: padding items
    ``[:i]``, key 1, ``[i:j]``, key 2, ``[j:]``, one per line (continuous text: each run of
    sentences on one line, so a key paragraph sits at a sentence boundary)."""
    i, j = where
    blocks: list[tuple[str, bool]] = []
    for seg, key in ((pad[:i], keys[0]), (pad[i:j], keys[1]), (pad[j:], "")):
        runs = [" ".join(seg)] if continuous and seg else seg
        blocks += [(b, False) for b in runs] + ([(key, True)] if key else [])
    spans, pos = [], 0
    for text, is_key in blocks:
        if is_key:
            spans.append([pos, pos + len(text)])
        pos += len(text) + 1
    return "\n".join(b for b, _ in blocks), spans


def placement(dispersion: str, n: int, u: tuple[float, float]) -> tuple[int, int]:
    """Where the two key paragraphs go among ``n`` padding items (``u``: two sorted uniform
    draws, so a row's random placement scales with ``n`` while its padding is fitted)."""
    fixed = {"first": (0, 0), "middle": (n // 2, n // 2), "last": (n, n)}
    return fixed.get(dispersion) or (int(u[0] * (n + 1)), int(u[1] * (n + 1)))


class Stream:
    """A padding stream read as far as a row needs (shared by a row's dispersions)."""

    def __init__(self, items: Iterator[str], counter: TokenCounter):
        self.items, self.counter = items, counter
        self.seen: list[str] = []
        self.sums: list[int] = []
        """Tokens of the first i + 1 items, each counted on its own."""

    def head(self, n: int) -> list[str] | None:
        """The first ``n`` items; None when the stream has fewer."""
        for item in itertools.islice(self.items, max(0, n - len(self.seen))):
            self.seen.append(item)
            self.sums.append((self.sums[-1] if self.sums else 0) + self.counter.count(item))
        return self.seen[:n] if len(self.seen) >= n else None

    def estimate(self, budget: int) -> int:
        """How many items fit ``budget`` tokens counted one by one: the search's first guess
        (joining them changes a count by a token or two per item)."""
        while (not self.sums or self.sums[-1] <= budget) and self.head(len(self.seen) + 1):
            pass
        return bisect.bisect_right(self.sums, budget)


class Builder:
    """The rows of one config: problems and key paragraphs built once, padding per row."""

    def __init__(self, cfg: PaddedReasoning, counter: TokenCounter, text: tuple[str, ...] | None):
        self.cfg, self.counter, self.text = cfg, counter, text
        self.cache: dict[tuple[str, int], tuple[Problem, tuple[str, str]]] = {}

    def rng(self, *parts: object) -> random.Random:
        return random.Random(":".join(map(str, ("padded_reasoning", self.cfg.seed, *parts))))

    def instance(self, task: str, k: int) -> tuple[Problem, tuple[str, str]]:
        """Problem ``k`` and its two key paragraphs (``k >= num_problems``: padding only)."""
        if (task, k) not in self.cache:
            n, size = self.cfg.num_problems, self.cfg.paragraph_tokens
            labels = [i % 2 == 0 for i in range(n)]  # balanced, in a seeded order
            self.rng(task, "labels").shuffle(labels)
            rng = self.rng(task, k)
            prob = make_problem(task, rng, labels[k] if k < n else k % 2 == 0)
            one, two = (key_paragraph(f, rng, self.counter, size) for f in prob.facts)
            self.cache[task, k] = (prob, (one, two))
        return self.cache[task, k]

    def padding(self, task: str, k: int, padding: str, rng: random.Random) -> Iterator[str]:
        """Padding items in order; none mentions a word of problem ``k``'s entities (but
        ``duplicate``, which is the key paragraphs themselves, alternating)."""
        prob, pars = self.instance(task, k)
        if padding == "duplicate":
            yield from itertools.cycle(pars)
        clean = mentions({w for e in prob.entities for w in e.split()})
        if padding == "different":  # a continuous span from a random sentence, one lap at most
            assert self.text is not None
            start = rng.randrange(len(self.text))
            yield from (s for s in self.text[start:] + self.text[:start] if not clean(s))
            return
        n = self.cfg.num_problems  # similar: other problems' paragraphs, n problems at a time
        for block in itertools.count():
            others = [
                p
                for j in range(block * n, block * n + n)
                if j != k
                for p in self.instance(task, j)[1]
            ]
            rng.shuffle(others)
            yield from (p for p in others if not clean(p))

    def row(
        self, task: str, k: int, size: int, padding: str, dispersion: str, pad: Stream
    ) -> dict[str, Any]:
        """One row, with as many padding items as bring ``mixin`` closest to ``size`` tokens."""
        prob, keys = self.instance(task, k)
        draws = self.rng(task, k, size, padding, dispersion)
        low, high = sorted(draws.random() for _ in range(2))
        built: dict[int, tuple[int, str, list[list[int]]]] = {}

        def build(n: int) -> tuple[int, str, list[list[int]]]:
            items = pad.head(n)
            if items is None:  # past the end of the text: never fits
                return sys.maxsize, "", []
            if n not in built:
                where = placement(dispersion, n, (low, high))
                mixin, spans = arrange(keys, items, where, padding == "different")
                built[n] = (self.counter.count(mixin), mixin, spans)
            return built[n]

        base, n = build(0)[0], 0
        if base < size:  # search from the items' own counts, then keep the closest
            best = largest_fitting(lambda m: build(m)[0] <= size, pad.estimate(size - base))
            n = min((best, best + 1), key=lambda m: (abs(build(m)[0] - size), m))
        tokens, mixin, spans = build(n)
        if abs(tokens - size) >= self.cfg.tolerance and pad.head(n + 1) is None:
            raise DataError(
                f"text_path: the padding text runs out before {size} tokens ({task} problem {k});"
                " give a longer text"
            )
        if abs(tokens - size) >= self.cfg.tolerance:
            raise UserError(
                f"tolerance: {task} problem {k}, {padding} padding: the mixin closest to {size} "
                f"tokens has {tokens} (key paragraphs alone: {base}); raise tolerance or ctx_sizes"
            )
        rule = task == "Simplified RuleTaker"
        return {
            "global_sample_id": TASKS.index(task) * self.cfg.num_problems + k,
            "sample_id": k,
            "label": str(prob.label),
            "dataset": task,
            "facts": None if rule else list(prob.facts),
            "rule": [prob.rule] if rule else None,
            "statement": list(prob.facts) if rule else None,
            "assertion/question": prob.question,
            "mixin": mixin,
            "padding_type": padding,
            "dispersion": dispersion,
            "ctx_size": size,
            "mixin_tokens": tokens,
            "tokenizer": self.counter.name,
            "key_spans": spans,
            "entities": list(prob.entities),
            "seed": self.cfg.seed,
            "generator": "padded_reasoning",
            "generator_version": VERSION,
        }

    def rows(self, paddings: tuple[str, ...]) -> Iterator[dict[str, Any]]:
        cfg = self.cfg
        for task in cfg.tasks:
            for k in range(cfg.num_problems):
                for size in cfg.ctx_sizes:
                    for padding in paddings:
                        items = self.padding(task, k, padding, self.rng(task, k, size, padding))
                        pad = Stream(items, self.counter)
                        for dispersion in cfg.dispersions:
                            yield self.row(task, k, size, padding, dispersion, pad)


def padding_text(cfg: PaddedReasoning) -> tuple[str, ...] | None:
    """Sentences of the ``different`` padding: ``text_path``, else the training-half passages of
    the Lost-in-the-Middle oracle file in file order; None when neither is there."""
    from needlework.datagen.passages import DEFAULT_DATA_PATH, load_partition, sentences
    from needlework.io import require_file

    if cfg.text_path is not None:
        path = require_file(cfg.text_path, "a UTF-8 text file for 'different' padding")
        try:
            found = tuple(sentences(" ".join(path.read_text(encoding="utf-8").split())))
        except UnicodeDecodeError:
            raise DataError(f"text_path: {path} is not UTF-8 text") from None
        if not found:
            raise DataError(f"text_path: {path} has no text")
        return found
    try:
        part = load_partition(DEFAULT_DATA_PATH, 0.5, 0)
    except UserError:
        return None
    texts = dict.fromkeys(part.passage(i).text for i in part.train)
    return tuple(s for t in texts for s in sentences(" ".join(t.split())))


def generate(cfg: PaddedReasoning, *, progress: bool = True) -> dict[str, Any]:
    """Write ``cfg.out_dir``; returns its manifest (``skipped`` says what was left out)."""
    from needlework.datagen.formatting import stats
    from needlework.datagen.writer import progress_bar
    from needlework.io import dumps, sha256_file, staged_dir, write_json
    from needlework.runinfo import write_run_info

    _check_out_dir(cfg.out_dir)
    counter = load_counter(cfg.tokenizer)
    text = padding_text(cfg) if "different" in cfg.paddings else None
    skipped = []
    if "different" in cfg.paddings and text is None:
        skipped.append(
            "padding 'different' skipped: no text (set text_path to a UTF-8 text file, or put "
            "nq-open-oracle.jsonl.gz in $NEEDLEWORK_DATA/lost-in-the-middle or "
            "data/lost-in-the-middle)"
        )
    paddings = tuple(p for p in cfg.paddings if p != "different" or text is not None)
    total = (
        len(cfg.tasks)
        * cfg.num_problems
        * len(cfg.ctx_sizes)
        * len(paddings)
        * len(cfg.dispersions)
    )
    tokens: dict[int, list[int]] = {n: [] for n in cfg.ctx_sizes}
    with (
        staged_dir(Path(cfg.out_dir)) as stage,
        progress_bar(total, progress, "padded_reasoning") as bar,
    ):
        write_run_info(stage, cfg)
        with (stage / ROWS).open("w", encoding="utf-8") as fh:
            for row in Builder(cfg, counter, text).rows(paddings):
                fh.write(dumps(row) + "\n")
                tokens[row["ctx_size"]].append(row["mixin_tokens"])
                bar.update()
        manifest = {
            "format": MANIFEST_FORMAT,
            "rows": total,
            "paddings": list(paddings),
            "skipped": skipped,
            "mixin_tokens": {str(n): stats(v) for n, v in tokens.items() if v},
            "files": {ROWS: {"sha256": sha256_file(stage / ROWS)}},
        }
        write_json(stage / "manifest.json", manifest)
    return manifest


def _check_out_dir(path: Path) -> None:
    """Replace only an empty folder or an earlier output of this kind (never other files)."""
    import json

    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        try:
            ours = json.loads((path / "manifest.json").read_text())["format"] == MANIFEST_FORMAT
        except (OSError, ValueError, KeyError, TypeError):
            ours = False
        if not ours:
            raise UserError(f"out_dir: {path} holds other files (refusing to replace them)")
