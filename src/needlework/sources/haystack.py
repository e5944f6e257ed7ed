"""Needle-in-a-haystack construction: pure functions of an rng, a token counter and text.

The fitting follows RULER's idea (Hsieh et al., 2024, arXiv:2404.06654: search the haystack size
against the real tokenizer instead of estimating it), rewritten as a pure search over a
``fits(n)`` predicate so it can be tested with any counter.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from needlework.errors import ConfigError
from needlework.sources.prompts import load_prompt
from needlework.tokenization import TokenCounter, largest_fitting

# Bland, number-free sentences (written for needlework) for the generated haystack.
FILLER = (
    "The river bends twice before it reaches the old mill.",
    "Most of the village gardens grow beans, onions and a few rows of lettuce.",
    "In spring the hills turn green and the paths become muddy.",
    "A narrow bridge connects the market square with the eastern fields.",
    "The baker opens early and closes his shop shortly after noon.",
    "Children walk to school along the road lined with poplar trees.",
    "On quiet evenings the sound of the church bell carries across the valley.",
    "The library keeps its oldest maps in a cabinet near the window.",
    "Farmers bring their goods to town on the first morning of each week.",
    "Clouds often gather over the mountains late in the afternoon.",
    "The inn by the crossroads serves soup, bread and strong tea.",
    "Travelers rest under the large oak before climbing the pass.",
    "A small museum displays tools that were once used in the quarries.",
    "The lake freezes in winter, and people skate near the shore.",
    "Wild geese fly south when the first cold winds arrive.",
    "The blacksmith repairs gates, hinges and the wheels of carts.",
    "Along the coast, fishing boats return before the evening tide.",
    "The town council meets in a hall with tall wooden doors.",
    "Orchards on the southern slope produce apples and pears.",
    "Lanterns hang along the harbor wall during the autumn festival.",
)
_KEY_WORDS = (
    (
        "amber",
        "silent",
        "crimson",
        "gentle",
        "hollow",
        "golden",
        "rapid",
        "frozen",
        "bright",
        "distant",
        "velvet",
        "quiet",
        "scarlet",
        "hidden",
        "ancient",
        "lucky",
    ),
    (
        "falcon",
        "harbor",
        "meadow",
        "lantern",
        "glacier",
        "orchard",
        "compass",
        "canyon",
        "beacon",
        "willow",
        "thunder",
        "pebble",
        "saddle",
        "anchor",
        "river",
        "summit",
    ),
)


def split_sentences(text: str) -> list[str]:
    """Whitespace-normalised sentences (split after ``.``, ``!`` or ``?``)."""
    flat = " ".join(text.split())
    return [s for s in re.split(r"(?<=[.!?])\s+", flat) if s]


def haystack_with_needle(units: Sequence[str], n: int, needle: str, depth_percent: float) -> str:
    """``n`` haystack units (cycled) with the needle inserted before unit round(depth * n)."""
    take = [units[i % len(units)] for i in range(n)]
    take.insert(round(depth_percent / 100 * n), needle)
    return " ".join(take)


@dataclass(frozen=True)
class NeedleItem:
    """One fitted prompt and what was hidden in it."""

    prompt: str
    key: str
    value: str
    num_units: int
    context_tokens: int


def build_needle_item(
    rng: random.Random,
    counter: TokenCounter,
    units: Sequence[str],
    *,
    context_length: int,
    depth_percent: float,
    needle: str,
    hint: int = 0,
) -> NeedleItem:
    """Draw a key and a 7-digit value, then fit the most haystack that keeps the prompt within
    ``context_length`` tokens (chat template included)."""
    key = f"{rng.choice(_KEY_WORDS[0])}-{rng.choice(_KEY_WORDS[1])}"
    value = str(rng.randint(1_000_000, 9_999_999))
    sentence = needle.format(key=key, value=value)
    template = load_prompt("niah").rstrip("\n")

    def render(n: int) -> str:
        hay = haystack_with_needle(units, n, sentence, depth_percent)
        return template.format(haystack=hay, key=key)

    def tokens(n: int) -> int:
        # the prompt as the model sees it: a user turn in its chat template
        return counter.count_chat([{"role": "user", "content": render(n)}], True)

    try:
        n = largest_fitting(lambda n: tokens(n) <= context_length, hint)
    except ValueError:
        raise ConfigError(
            f"{context_length} tokens cannot hold even the question and the needle "
            f"({tokens(0)} tokens)",
            field="context_lengths",
        ) from None
    return NeedleItem(render(n), key, value, n, tokens(n))
