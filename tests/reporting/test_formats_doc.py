"""docs/formats.md §R is rendered from the record declarations in ``needlework.records``, so the
documented fields cannot drift from what readers accept.

Regenerate after changing a record:  PYTHONPATH=src python tests/reporting/test_formats_doc.py
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any

from needlework import records
from needlework.config import adapter

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
REQUIRED = object()


def _defaults(cls: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(cls):
        missing = dataclasses.MISSING
        return {
            f.name: f.default
            if f.default is not missing
            else (f.default_factory() if f.default_factory is not missing else REQUIRED)
            for f in dataclasses.fields(cls)
        }
    if hasattr(cls, "model_fields"):
        return {
            name: REQUIRED if f.is_required() else f.get_default(call_default_factory=True)
            for name, f in cls.model_fields.items()
        }
    return dict.fromkeys(cls.__annotations__, REQUIRED)  # a TypedDict: every key required


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """The §R block: per record its docstring and a field table (type, default, meaning)."""
    out = [BEGIN, ""]
    for title, cls in RECORDS:
        props = adapter(cls).json_schema()["properties"]
        out += [f"### {title}: `{cls.__name__}`", "", inspect.cleandoc(cls.__doc__), ""]
        out += ["| field | type | default | meaning |", "|---|---|---|---|"]
        for name, default in _defaults(cls).items():
            kind = cls.__annotations__[name]
            kind = getattr(kind, "__forward_arg__", kind)  # TypedDict keys are ForwardRefs
            if kind.startswith("Annotated["):  # the type without its pydantic metadata
                kind = kind.removeprefix("Annotated[").split(",")[0]
            shown = "required" if default is REQUIRED else f"`{json.dumps(default)}`"
            doc = props[name].get("description", "")
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
        props = adapter(cls).json_schema()["properties"]
        assert all(p.get("description") for p in props.values()), cls.__name__


if __name__ == "__main__":
    head, _, tail = _documented()
    DOC.write_text(head + render() + tail, encoding="utf-8")
    print(f"wrote {DOC}")
