"""docs/formats.md §R is rendered from the record declarations in ``needlework.records``, so the
documented fields cannot drift from what readers accept.

Regenerate after changing a record:  PYTHONPATH=src python tests/reporting/test_formats_doc.py
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

from needlework import records
from needlework.config import _type_text, adapter, describe_fields

DOC = Path(__file__).resolve().parents[2] / "docs" / "formats.md"
BEGIN = "<!-- records: rendered from needlework.records by tests/reporting/test_formats_doc.py -->"
END = "<!-- records: end -->"
RECORDS = [
    ("`predictions.jsonl`, one per line", records.Prediction),
    ("A chat turn (`messages`)", records.Message),
    ("`metrics.json`", records.Metrics),
    ("`metrics.json` `metrics` and `by` entries", records.Mean),
    ("`metrics.json` `tasks` entries", records.Task),
    ("`metrics.json` `figures` entries", records.Figure),
    ("`run.json`", records.RunInfo),
    ("`model.json`", records.TrainedModel),
    ("`manifest.json`", records.Manifest),
    ("`manifest.json` `held_out`", records.HeldOut),
]


def _fields(cls: Any) -> list[tuple[str, str, str, str]]:
    """``(name, type, default, docstring)`` per field, as ``needlework ls`` shows a config's."""
    if hasattr(cls, "__pydantic_fields__"):
        return describe_fields(cls)
    docs = adapter(cls).json_schema()["properties"]  # a TypedDict: every key required
    hints = typing.get_type_hints(cls)
    return [(k, _type_text(hints[k]), "(required)", docs[k]["description"]) for k in hints]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """The §R block: per record its docstring and a field table (type, default, meaning)."""
    out = [BEGIN, ""]
    for title, cls in RECORDS:
        out += [f"### {title}: `{cls.__name__}`", "", inspect.cleandoc(cls.__doc__), ""]
        out += ["| field | type | default | meaning |", "|---|---|---|---|"]
        for name, kind, default, doc in _fields(cls):
            shown = "required" if default == "(required)" else f"`{default}`"
            out.append(f"| `{name}` | `{_cell(kind)}` | {shown} | {_cell(doc)} |")
        out.append("")
    return "\n".join([*out, END])


def _documented() -> tuple[str, str, str]:
    text = DOC.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return head, text, tail


def test_formats_md_shows_every_record_field_as_declared():
    head, text, tail = _documented()
    assert BEGIN in text and END in text
    assert head + render() + tail == text, f"regenerate: PYTHONPATH=src python {__file__}"


def test_every_record_field_has_a_docstring():
    for _, cls in RECORDS:
        assert all(doc for _, _, _, doc in _fields(cls)), cls.__name__


if __name__ == "__main__":
    head, _, tail = _documented()
    DOC.write_text(head + render() + tail, encoding="utf-8")
    print(f"wrote {DOC}")
