"""Verified downloads (without the network) and the data-file readers."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import urllib.error
import zipfile

import pytest
from tests.conftest import shared_file

from needlework.errors import DataError, UserError
from needlework.sources import data


def upstream_entry(path, content: bytes) -> data.UpstreamFile:
    blob = hashlib.sha1(f"blob {len(content)}\0".encode() + content).hexdigest()
    return data.UpstreamFile(path, blob, len(content), hashlib.sha256(content).hexdigest())


def test_git_blob_sha1_matches_git(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello\x00world\n" * 100)
    try:
        expected = subprocess.run(
            ["git", "hash-object", str(f)], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git not available")
    assert data.git_blob_sha1(f) == expected


def test_verify_file_names_the_failing_check(tmp_path):
    content = b'{"question": "q"}\n'
    f = tmp_path / "f.jsonl"
    f.write_bytes(content)
    entry = upstream_entry("qa_data/f.jsonl", content)
    data.verify_file(f, entry)
    f.write_bytes(content.replace(b"q", b"r"))  # same size, other bytes
    with pytest.raises(DataError, match="sha256 .* does not match upstream qa_data/f.jsonl"):
        data.verify_file(f, entry)
    f.write_bytes(content + b"\n")
    with pytest.raises(DataError, match="size"):
        data.verify_file(f, entry)
    wrong_blob = data.UpstreamFile(entry.path, "0" * 40, entry.size_bytes, entry.sha256)
    f.write_bytes(content)
    with pytest.raises(DataError, match="git blob sha1"):
        data.verify_file(f, wrong_blob)


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_download_verified_with_a_fake_opener(tmp_path):
    content = b"x" * 3_000_000
    table = {"qa_data/a.jsonl.gz": upstream_entry("qa_data/a.jsonl.gz", content)}
    urls = []

    def opener(url):
        urls.append(url)
        return FakeResponse(content)

    dest = tmp_path / "data" / "qa_data" / "a.jsonl.gz"
    out = data.download_verified("qa_data/a.jsonl.gz", dest, table, opener=opener, progress=False)
    assert out == dest and dest.read_bytes() == content
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert urls == [
        f"https://raw.githubusercontent.com/nelson-liu/lost-in-the-middle/"
        f"{data.LITM_COMMIT}/qa_data/a.jsonl.gz"
    ]
    # a verified copy is reused without fetching
    data.download_verified("qa_data/a.jsonl.gz", dest, table, opener=opener, progress=False)
    assert len(urls) == 1


def test_download_rejects_wrong_bytes_and_leaves_nothing(tmp_path):
    table = {"qa_data/a.jsonl.gz": upstream_entry("qa_data/a.jsonl.gz", b"good bytes")}
    dest = tmp_path / "a.jsonl.gz"
    with pytest.raises(DataError, match="sha256"):
        data.download_verified(
            "qa_data/a.jsonl.gz",
            dest,
            table,
            opener=lambda url: FakeResponse(b"evil bytes"),
            progress=False,
        )
    assert list(tmp_path.iterdir()) == []

    def unreachable(url):
        raise urllib.error.URLError("Name or service not known")

    with pytest.raises(UserError, match="cannot download https://.*Name or service"):
        data.download_verified(
            "qa_data/a.jsonl.gz", dest, table, opener=unreachable, progress=False
        )
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match="not a file of"):
        data.download_verified("qa_data/zzz.jsonl.gz", dest, table, progress=False)


def test_default_opener_is_blocked_by_the_offline_guard(tmp_path):
    table = {"qa_data/a.jsonl.gz": upstream_entry("qa_data/a.jsonl.gz", b"abc")}
    with pytest.raises((UserError, RuntimeError)):
        data.download_verified("qa_data/a.jsonl.gz", tmp_path / "a", table, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_embedded_checksums_equal_the_shared_table():
    import csv

    tsv = shared_file("lost-in-the-middle", "UPSTREAM_CHECKSUMS.tsv")
    rows = csv.DictReader(tsv.read_text().splitlines(), delimiter="\t")
    shared = {
        r["upstream_path"]: data.UpstreamFile(
            r["upstream_path"], r["git_blob_sha1_at_29b8a6d"], int(r["size_bytes"]), r["sha256"]
        )
        for r in rows
    }
    assert shared == data.litm_checksums() and len(shared) == 19


def test_shared_files_verify_against_the_pinned_table():
    table = data.litm_checksums()
    for name in ("nq-open-oracle.jsonl.gz", "kv-retrieval-75_keys.jsonl.gz"):
        path = shared_file("lost-in-the-middle", name)
        entry = next(v for k, v in table.items() if k.endswith(name))
        data.verify_file(path, entry)


def test_read_rows_formats_agree(tmp_path):
    rows = [{"a": 1, "b": ["x", "y"]}, {"a": 2, "b": []}]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    with zipfile.ZipFile(tmp_path / "t.zip", "w") as zf:
        zf.writestr("t.jsonl", jsonl.read_text())
    for name in ("t.jsonl", "t.parquet", "t.zip"):
        assert [r for _, r in data.read_rows(tmp_path / name)] == rows, name
    wheres = [w for w, _ in data.read_rows(tmp_path / "t.zip")]
    assert wheres[1].endswith("t.zip!t.jsonl:2")


def test_read_rows_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        list(data.read_rows(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"bad\.jsonl\.gz: cannot read"):
        list(data.read_rows(bad))
    arr = tmp_path / "arr.jsonl"
    arr.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"arr\.jsonl:2: expected a JSON object"):
        list(data.read_rows(arr))
