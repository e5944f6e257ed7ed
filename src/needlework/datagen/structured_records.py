"""Structured-record retrieval: find one field of the record with a given id, in JSON or a table.

Run:  needlework generate --config configs/datagen/structured_records_smollm2.yaml

Instead of the dictionaries of "From Artificial Needles to Real Haystacks" (Xiong et al., ICLR
2025, arXiv:2406.19292), a prompt lists ``num_records`` records, each an integer ``id`` and
``fields`` integer-valued named fields (``price``, ``stock``, ...), either as JSON objects one per
line (``format: json``) or as a table, a header line then ``|``-separated rows (``format:
table``). The question names a record id and a field. Why: the paper's key is the only thing on
a line that matters; here the model must find the row by one column (the id) and read another
column (the field) of that same row, in the two layouts long contexts really hold (JSON logs and
API dumps, tables), which is column-addressed retrieval the dictionary tasks do not exercise.

Rules: every prompt uses ``fields`` names drawn from ``field_names``, shown in that list's order
in every record (the same columns in every row); ids are distinct and no field value equals the
gold id, so the gold id occurs exactly once in the prompt. The answer names the field, the id
and the value; it does not name the row (rows carry no label, and counting rows is not
retrieval), but ``gold_dict_name`` records the 1-based row number.
"""

from __future__ import annotations

import functools
import json
import random
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field

from needlework.config import Distinct, Fraction, PositiveInt, config
from needlework.datagen.base import GoldFractions, Slot, Task, UnitCount, load_prompt
from needlework.datagen.dicts import DigitRange, NumberPool, NumberPools, number_pool
from needlework.registry import generators


def _not_id(name: str) -> str:
    if name == "id":
        raise ValueError("expected a field name other than 'id' (every record has its id)")
    return name


FieldName = Annotated[str, Field(pattern=r"^[a-z][a-z_]*$"), AfterValidator(_not_id)]


@generators.register("structured_records")
@config
class StructuredRecords(GoldFractions, NumberPools):
    """Records with an id and integer fields, as JSON lines or a table; find one field."""

    num_records: UnitCount | None = 110
    """Records per prompt (110: one below what the budget search finds for 3-field JSON records
    in the paper's 4K mistral:v1 budget; tables fit ~180); null = as many as fit the budget."""
    fields: PositiveInt = 3
    """Fields per record besides the id (3: as many numbers per line as a simple-task
    dictionary holds pairs)."""
    field_names: Annotated[tuple[FieldName, ...], Field(min_length=1), Distinct] = (
        "price",
        "stock",
        "weight",
        "code",
        "rank",
        "size",
        "score",
        "count",
    )
    """Names the fields are drawn from (``fields`` of them per prompt, in this order): distinct
    plain lowercase words other than ``id``, so the question and the columns read naturally."""
    format: Literal["json", "table"] = "json"
    """``json``: one ``json.dumps`` object per line; ``table``: a header line, then rows of
    ``|``-separated values."""
    id_digits: DigitRange = (3, 4)
    """Digit count of record ids, inclusive (3-4, as the simple task's keys)."""
    value_digits: DigitRange = (3, 4)
    """Digit count of field values, inclusive (3-4, as the simple task's values)."""
    answer_template: bool = True
    """Append the answer template to the prompt (the paper trains both variants)."""
    frac_0: Fraction = 0.05
    """Fraction of samples per split with the gold record forced first (0.05, the paper's
    simple-task value)."""
    frac_top5: Fraction = 0.03
    """Further fraction with the gold record in the first int(N*0.05) rows (0.03, the paper's
    simple-task value)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fields > len(self.field_names):
            raise ValueError(
                f"fields: must be <= {len(self.field_names)} (the field_names), got {self.fields}"
            )
        if self.num_records is not None and self.num_records > self._distinct_ids:
            raise ValueError(
                f"num_records: {self.num_records} distinct ids do not exist with id_digits "
                f"{list(self.id_digits)}"
            )

    @functools.cached_property
    def _ids(self) -> NumberPool:
        return number_pool(*self.id_digits)

    @property
    def max_units(self) -> tuple[int, str]:
        """Most records one prompt can hold (each needs its own id) and why: the budget search
        must stop there rather than ask :meth:`build` for more."""
        n = self._distinct_ids
        return n, (
            f"generator.id_digits {list(self.id_digits)} gives only {n} distinct ids (widen it)"
        )

    @property
    def _distinct_ids(self) -> int:
        return 10 ** self.id_digits[1] - 10 ** (self.id_digits[0] - 1)

    @property
    def prompt_name(self) -> str:
        table = "_table" if self.format == "table" else ""
        return f"structured_records{table}" + ("_wtemplate" if self.answer_template else "")

    unit: ClassVar[str] = "records"

    @property
    def num_units(self) -> int | None:
        return self.num_records

    def _render(self, names: list[str], rows: list[list[int]]) -> str:
        if self.format == "json":
            return "\n".join(json.dumps(dict(zip(["id", *names], row))) for row in rows)
        lines = [" | ".join(["id", *names])]
        lines += [" | ".join(map(str, row)) for row in rows]
        return "\n".join(lines)

    def build(
        self, rng: random.Random, num_records: int, gold_position: int, slot: Slot | None = None
    ) -> Task:
        ids_pool, vals = self._ids, self._values
        chosen = set(rng.sample(range(len(self.field_names)), self.fields))
        names = [n for i, n in enumerate(self.field_names) if i in chosen]
        ids: list[str] = []
        seen: set[str] = set()
        while len(ids) < num_records:
            x = ids_pool.one(rng)
            if x not in seen:
                seen.add(x)
                ids.append(x)
        gold_id = ids[gold_position]
        values = vals.draw(rng, num_records * self.fields)
        # No field value equals the gold id, so the id occurs exactly once in the prompt.
        for i, v in enumerate(values):
            while v == gold_id:
                v = values[i] = vals.one(rng)
        rows = [
            [int(ids[r]), *(int(v) for v in values[r * self.fields : (r + 1) * self.fields])]
            for r in range(num_records)
        ]
        column = rng.randrange(self.fields)
        gold_field = names[column]
        gold_value = rows[gold_position][1 + column]
        prompt = load_prompt(self.prompt_name).format(
            records=self._render(names, rows), gold_field=gold_field, gold_record_id=gold_id
        )
        answer = load_prompt("structured_records.answer").format(
            gold_field=gold_field, gold_record_id=gold_id, gold_value=gold_value
        )
        return Task(
            prompt,
            answer,
            {
                "gold_position": gold_position,
                "num_records": num_records,
                "gold_dict_name": str(gold_position + 1),
                "gold_record_id": int(gold_id),
                "gold_key": int(gold_id),
                "gold_field": gold_field,
                "gold_value": gold_value,
                "answer_template": self.answer_template,
                "format": self.format,
                "field_names": names,
            },
        )
