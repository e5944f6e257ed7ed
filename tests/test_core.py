"""Config loader, registry and atomic IO: the plumbing every stage relies on."""

from __future__ import annotations

import socket
from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

import pytest

from needlework.config import config, dump_yaml, field_docs, load_config
from needlework.errors import ConfigError, DataError
from needlework.io import atomic_write, read_jsonl, write_jsonl
from needlework.registry import Registry

units: Registry = Registry("widget", "needlework")


@units.register("round_widget")
@config
class RoundWidget:
    """A test unit."""

    radius: int = 3
    """Radius in cm."""


@config
class Inner:
    lo_hi: tuple[int, int] = (3, 4)

    def __post_init__(self):
        if self.lo_hi[0] > self.lo_hi[1]:
            raise ValueError(f"lo_hi: lower bound {self.lo_hi[0]} exceeds upper {self.lo_hi[1]}")


@config
class Top:
    widget: Annotated[RoundWidget, units]
    out: Path = Path("x")
    mode: Literal["a", "b"] = "a"
    seeds: list[int] = field(default_factory=lambda: [0])
    inner: Inner = field(default_factory=Inner)
    rate: float = 1.0
    note: str | None = None


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_load_nested_units_and_overrides(tmp_path):
    p = write(tmp_path, "widget: {name: round_widget, radius: 5}\nseeds: [1, 2]\n")
    cfg = load_config(Top, p, ["widget.radius=7", "inner.lo_hi=[2,9]", "rate=3", "mode=b"])
    assert cfg.widget == RoundWidget(radius=7)
    assert cfg.inner.lo_hi == (2, 9) and cfg.rate == 3.0 and cfg.mode == "b"
    assert cfg.seeds == [1, 2]
    assert "name: round_widget" in dump_yaml(cfg)
    again = load_config(Top, data=__import__("yaml").safe_load(dump_yaml(cfg)))
    assert again == cfg


@pytest.mark.parametrize(
    "text, overrides, needle",
    [
        ("widget: round_widget\nbogus: 1\n", [], "unknown key(s) 'bogus'"),
        ("widget: {name: square_widget}\n", [], "unknown widget 'square_widget'"),
        ("widget: round_widget\n", ["widget.radius=abc"], "field 'widget.radius': expected int"),
        ("widget: round_widget\n", ["inner.lo_hi=[5,3]"], "field 'inner.lo_hi': lower bound"),
        ("widget: round_widget\n", ["mode=c"], "expected one of 'a', 'b'"),
        ("seeds: [1]\n", [], "field 'widget': is required"),
        ("widget: [\n", [], "invalid YAML"),
        ("widget: round_widget\n", ["rate"], "not of the form"),
    ],
)
def test_config_errors_name_file_and_field(tmp_path, text, overrides, needle):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(Top, p, overrides)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)
    if "YAML" not in needle and "form" not in needle:
        assert str(p) in str(info.value)


def test_field_docs_read_attribute_docstrings():
    assert field_docs(RoundWidget) == {"radius": "Radius in cm."}


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"

    def rows():
        yield {"a": 1}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_jsonl(target, rows())
    assert list(tmp_path.iterdir()) == []
    write_jsonl(target, [{"a": 1}, {"b": "é"}])
    assert [r for r in read_jsonl(target)] == [{"a": 1}, {"b": "é"}]
    with atomic_write(target) as fh:
        fh.write("{bad json\n")
    with pytest.raises(DataError, match=r"out.jsonl:1: invalid JSON"):
        list(read_jsonl(target))


def test_network_guard_blocks_non_loopback():
    s = socket.socket()
    with pytest.raises(RuntimeError, match="network"):
        s.connect(("8.8.8.8", 53))
    s.close()


def test_atomic_write_respects_umask(tmp_path):
    import os

    target = tmp_path / "shared.json"
    with atomic_write(target) as fh:
        fh.write("{}")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_overrides_index_lists():
    from needlework.config import apply_overrides

    data = {"benchmarks": [{"name": "a"}, {"name": "b", "limit": 1}]}
    out = apply_overrides(data, ["benchmarks.1.limit=5", "benchmarks.0.tag=x"])
    assert out["benchmarks"] == [{"name": "a", "tag": "x"}, {"name": "b", "limit": 5}]
    assert data["benchmarks"][1]["limit"] == 1
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides(data, ["benchmarks.7.limit=5"])


def test_overrides_name_list_items_so_reordering_cannot_misdirect_them():
    from needlework.config import apply_overrides

    data = {"benchmarks": [{"name": "a"}, "b", {"name": "c", "limit": 1}]}
    out = apply_overrides(data, ["benchmarks.c.limit=5", "benchmarks.b.limit=2"])
    assert out["benchmarks"] == [
        {"name": "a"},
        {"name": "b", "limit": 2},
        {"name": "c", "limit": 5},
    ]
    reordered = {"benchmarks": [data["benchmarks"][2], data["benchmarks"][0]]}
    assert apply_overrides(reordered, ["benchmarks.c.limit=5"])["benchmarks"][0]["limit"] == 5
    with pytest.raises(ConfigError, match=r"no item named 'z' in the list \(a, b, c\)"):
        apply_overrides(data, ["benchmarks.z.limit=5"])
    twice = {"benchmarks": [{"name": "mdqa"}, {"name": "mdqa"}]}
    with pytest.raises(ConfigError, match=r"2 items are named 'mdqa'.*index \(0, 1\)"):
        apply_overrides(twice, ["benchmarks.mdqa.limit=5"])


def test_a_unit_missing_a_contract_member_fails_when_it_registers():

    from needlework.registry import Registry, benchmarks

    @config
    class Half:
        data_path: str = "x"

        def samples(self):
            return iter(())

        def score(self, sample, output):
            return {}

    with pytest.raises(TypeError) as info:
        benchmarks.register("nw_half")(Half)
    msg = str(info.value)
    assert "benchmark 'nw_half'" in msg
    assert "lacks required member(s): label, group_by, primary_metric" in msg
    assert "nw_half" not in benchmarks.names()
    with pytest.raises(TypeError, match=r"samples and score \(or run_suite\)"):
        Registry("b", "needlework", either=(("samples", "score"), ("run_suite",))).register("x")(
            type("X", (), {})
        )


def test_a_packaged_unit_must_live_in_a_file_named_after_it():
    from needlework.registry import Registry

    reg = Registry("benchmark", "needlework")
    unit = type("Unit", (), {"__module__": "needlework.evaluation.benchmarks.mdqa_extra"})
    with pytest.raises(TypeError, match=r"must be named after it \(mdqa_long\.py\)"):
        reg.register("mdqa_long")(unit)
    reg.register("mdqa_extra")(unit)  # name == file stem
    assert reg._units["mdqa_extra"] is unit


def test_discover_imports_unit_modules_only(tmp_path, monkeypatch):
    """A stage finds its units by the decorator line: adding a unit is adding its file."""
    import sys

    from needlework.registry import discover

    pkg = tmp_path / "nwpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "alpha.py").write_text(
        "from needlework.registry import Registry\nR = Registry('t', 'x')\n"
        "@R.register('alpha')\nclass A: pass\n"
    )
    (pkg / "helper.py").write_text("raise RuntimeError('helpers are not imported')\n")
    (pkg / "doc.py").write_text(
        '"""Mentions @benchmarks.register( only inside a docstring."""\n  @x.register(\n'
    )
    (pkg / "_private.py").write_text("@R.register('p')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert discover("nwpkg", [str(pkg)]) == ["alpha"]
    assert "nwpkg.alpha" in sys.modules and "nwpkg.helper" not in sys.modules


def test_every_stage_discovers_its_units():
    from needlework import registry

    assert {"multidoc_qa", "in2_style", "niah_train", "simple_dict_kv"} <= set(
        registry.generators.names()
    )
    assert {"mdqa", "general", "niah"} <= set(registry.benchmarks.names())
    assert {"hf", "openai", "scripted", "vllm"} == set(registry.backends.names())
    assert {"hf_sft", "openai"} == set(registry.trainers.names())


def test_a_cache_that_cannot_be_written_never_fails_a_command(tmp_path, monkeypatch):
    import os

    from needlework.runtime import cache_table, save_cache_table

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    save_cache_table(blocker / "table.json", {"k": 1})  # its folder cannot be made (OSError)
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # a read-only folder (UserError)
    monkeypatch.setenv("NEEDLEWORK_CACHE", str(tmp_path / "cache"))
    path, known = cache_table("table.json")
    save_cache_table(path, {"k": 1})
    assert known == {} and not path.exists()


def test_a_folder_or_device_where_a_file_is_expected_says_so(tmp_path):
    from needlework.config import read_yaml
    from needlework.io import require_file

    with pytest.raises(DataError, match=r"is a folder \(expected JSON lines\)"):
        list(read_jsonl(tmp_path))
    with pytest.raises(DataError, match="file not found"):
        require_file(tmp_path / "missing.jsonl", "JSON lines")
    if Path("/dev/null").exists():
        with pytest.raises(ConfigError, match="is not a regular file"):
            read_yaml("/dev/null")
