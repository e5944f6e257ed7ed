"""Benchmark data files: verified downloads, table readers, and the Lost-in-the-Middle formats.

Lost in the Middle (Liu et al., 2023, arXiv:2307.03172) ships its MDQA and KV files in
github.com/nelson-liu/lost-in-the-middle; we pin commit ``29b8a6d0`` and accept a downloaded file
only if its size, sha256 and git blob id all match the table below (the same values as
``../shared/data/lost-in-the-middle/UPSTREAM_CHECKSUMS.tsv``; a test keeps the two in sync).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pydantic
from pydantic import Field

from needlework.config import validate
from needlework.errors import DataError, UserError
from needlework.io import make_temp_file, parse_jsonl_lines, require_file, sha256_file

LITM_REPO = "nelson-liu/lost-in-the-middle"
LITM_COMMIT = "29b8a6d042ce29abccee3db1a73171a107d7e6af"
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"

# upstream path, git blob sha1 at LITM_COMMIT, size in bytes, sha256
_LITM_CHECKSUMS = """\
qa_data/nq-open-oracle.jsonl.gz 9e0e498f7feaca12e5ff1f40526ed7f7a6d9b7d9 900334 6a7f72b846f663a133ef952244e5a4e43f06bcf190afe34e8fbe687ce0d1653e
qa_data/10_total_documents/nq-open-10_total_documents_gold_at_0.jsonl.gz eff71009ef7056aae77733d6ee8cf4614f63756e 7801797 192a05b27af2b09eec33ca0c94bb5cf82bcaf70d78b3bdff1258df34bf37aab9
qa_data/10_total_documents/nq-open-10_total_documents_gold_at_4.jsonl.gz bc6f62ddde818de432101f442e1bad2d6ff7eb28 7806238 f8425253dafc19cd9de31c06ab6c8b57d4da2bf48b8ea2d0790b805fb3aa1968
qa_data/10_total_documents/nq-open-10_total_documents_gold_at_9.jsonl.gz 155bc34b092cf409338892670a78469b5b49c8fa 7774527 fab97badc6d69bae53c805bb198e8742a78ddf3c40a076989ef62891b76c997f
qa_data/20_total_documents/nq-open-20_total_documents_gold_at_0.jsonl.gz 19d062a7c970798aa44f47b708d449ee736c046a 15151873 69a8dd87a45f07fb3ed9b804917a89db975cd6e488682fc838edca029cc3881f
qa_data/20_total_documents/nq-open-20_total_documents_gold_at_4.jsonl.gz dfc3390cf412688c89cbdf3fe94d9ea91a2a6531 15163003 c5e44700c4db24536f139f7383e3dd002413515ee889aeadc72767dd7f289682
qa_data/20_total_documents/nq-open-20_total_documents_gold_at_9.jsonl.gz 3da78e8cd44e269eb6c30a1d72d8ed00ac88df45 15155756 cbada411f70235afc47d9b5407e9358ad72eb021742402ff032c8b65076ffb2f
qa_data/20_total_documents/nq-open-20_total_documents_gold_at_14.jsonl.gz a44fb5b01239d9efe844db2ccd2b00266ec4df51 15152418 86c1a25093615baefdd1ee4db7a993548b3bef24ca02eb9bd8db43fbedf517f2
qa_data/20_total_documents/nq-open-20_total_documents_gold_at_19.jsonl.gz d5dbd5d6ef8a2e1718d11577bbbce836eb3e883b 15114700 d79b715e1b8c8301335e93cb01659f68c24f0253a808c3190b06d21896506c6c
qa_data/30_total_documents/nq-open-30_total_documents_gold_at_0.jsonl.gz a99c95443cf161e1b2f5310bcb47256de1dbd403 22465103 0500933e0957ee264a8bf57ca4cd58042124f222c814302dbe2e3af788ff4e95
qa_data/30_total_documents/nq-open-30_total_documents_gold_at_4.jsonl.gz 9ec47860d4a72de6567d0afcbb9a2c3abd812871 22477142 3cfc86ec1056d15d32c3e0ae115bf55c1c7e14fa6bea53e1a3d57af18329cb56
qa_data/30_total_documents/nq-open-30_total_documents_gold_at_9.jsonl.gz 9599f9270e8af3b9d21e2253bc773bddf59993c1 22475002 6da79584eac95b3d388fe6702f7c4ac32c50f8431865ec591c8af3de485128e2
qa_data/30_total_documents/nq-open-30_total_documents_gold_at_14.jsonl.gz 17358fd79fe06a5dcea76d3787676993ae97ab91 22472929 14ec97b971d111e381b8ad6a3c14eb87f6bff83401678afcdc32ec4afed9aeb7
qa_data/30_total_documents/nq-open-30_total_documents_gold_at_19.jsonl.gz fbea0d0ef2c4e6b83c5dd58673e9ec016f613925 22464022 aef115bb3855b6d8ece2f6f1222cd3470bbeedd3f7c52bd106979810d09940e0
qa_data/30_total_documents/nq-open-30_total_documents_gold_at_24.jsonl.gz 50ee4e42f3c445267c8c2379896d64107fe3c14b 22459904 bf9307930a0ed7fe151012d5619c4978c1dc13bf51f70481242839704d9ac477
qa_data/30_total_documents/nq-open-30_total_documents_gold_at_29.jsonl.gz 80ecfede52e9f45868d432e21506ab9c06e08e23 22419963 e768fcd157c321e0423432decb8623f537e2a97e2dd570873261f1acb6e2dfc6
kv_retrieval_data/kv-retrieval-75_keys.jsonl.gz 6d125bd4c448d2697c26948b9be66c3bfe33a392 1667554 eb6d61fc3473349f2b86df76757c6ab659cc929d907d24caf1c69928e03f6203
kv_retrieval_data/kv-retrieval-140_keys.jsonl.gz 45d0bcd57a6d3f5219894ebc625f21e30e42df8a 3104449 66d54aae7e38779da482895ccd538faaf5309f144e54f30dc530a95091581fa1
kv_retrieval_data/kv-retrieval-300_keys.jsonl.gz c25c0d5a1c1fcc029996477aed1c68aecaa2a002 6641428 47c795feb8ee5e47e7a151f866babfca968c786818fed3d7caa5ee6e9fedc70a
"""  # noqa: E501


# ------------------------------------------------------------------------ checksums, downloads


@dataclass(frozen=True)
class UpstreamFile:
    """One file of the pinned upstream commit and the hashes a copy must match."""

    path: str
    git_blob_sha1: str
    size_bytes: int
    sha256: str


def find_local(folder: str, name: str) -> Path | None:
    """``<dir>/<folder>/<name>`` in the first folder in the ``shared/data`` layout that has it:
    ``$NEEDLEWORK_DATA`` (the one documented setting; ``make test`` points it at a
    ``../shared/data`` checkout), then ``data/`` in the working directory. No other place is
    guessed."""
    from needlework.runtime import settings

    for root in (settings().NEEDLEWORK_DATA, Path("data")):
        if root is not None and (root / folder / name).is_file():
            return (root / folder / name).resolve()
    return None


def locate(
    data_path: str,
    default: str,
    folder: str,
    names: Sequence[str],
    *,
    field: str,
    search: bool = False,
    hint: str = "",
) -> Path:
    """A data file named by a config's ``data_path``: the file itself, or the first of ``names``
    (relative paths; the last is the file's name) in that folder, or with ``search`` that name
    anywhere below it; the default path also looks in ``$NEEDLEWORK_DATA/<folder>`` and
    ``data/<folder>``. Else a DataError, one line naming the field and what to do (+ ``hint``)."""
    root = Path(data_path)
    if root.is_file():
        return root
    if root.is_dir():
        below = sorted(root.rglob(names[-1])) if search else []
        for candidate in (*(root / n for n in names), *below):
            if candidate.is_file():
                return candidate
    if data_path == default:
        found = find_local(folder, names[-1])
        if found is not None:
            return found
    raise DataError(
        f"{field}: {names[-1]} not found at {data_path} (give the file, a folder holding it, "
        f"or set NEEDLEWORK_DATA to a folder holding {folder}/{hint})"
    )


def litm_checksums() -> dict[str, UpstreamFile]:
    """The pinned Lost-in-the-Middle table: {upstream path: UpstreamFile}."""
    rows = (line.split() for line in _LITM_CHECKSUMS.splitlines())
    return {path: UpstreamFile(path, blob, int(size), sha) for path, blob, size, sha in rows}


def git_blob_sha1(path: str | Path) -> str:
    """``git hash-object FILE``: sha1 over ``b"blob <size>\\0"`` + the bytes."""
    p = Path(path)
    h = hashlib.sha1(f"blob {p.stat().st_size}\0".encode())
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: str | Path, expected: UpstreamFile) -> None:
    """Raise DataError naming the first of size / sha256 / git blob id that does not match."""
    p = Path(path)
    size = p.stat().st_size
    checks = (
        ("size", lambda: size, expected.size_bytes),
        ("sha256", lambda: sha256_file(p), expected.sha256),
        ("git blob sha1", lambda: git_blob_sha1(p), expected.git_blob_sha1),
    )
    for what, actual, want in checks:
        got = actual()
        if got != want:
            raise DataError(
                f"{p}: {what} {got} does not match upstream {expected.path} ({want}); "
                "delete the file and download it again"
            )


Opener = Callable[[str], Any]  # url -> a readable, closable response (urllib.request.urlopen)


def _urlopen(url: str) -> Any:
    import urllib.request

    return urllib.request.urlopen(url, timeout=60)  # noqa: S310 - fixed https host


def download_verified(
    upstream_path: str,
    dest: str | Path,
    checksums: dict[str, UpstreamFile],
    *,
    opener: Opener = _urlopen,
    progress: bool = True,
) -> Path:
    """Fetch ``upstream_path`` at the pinned commit into ``dest`` unless a verified copy is there.

    The bytes go to a temporary file beside ``dest`` and are renamed into place only after all
    three checks pass, so a failed or interrupted download leaves nothing under the final name.
    """
    if upstream_path not in checksums:
        raise UserError(
            f"{upstream_path}: not a file of {LITM_REPO}@{LITM_COMMIT[:7]} that we "
            "have checksums for"
        )
    expected = checksums[upstream_path]
    dest = Path(dest)
    if dest.exists():
        verify_file(dest, expected)
        return dest
    from tqdm import tqdm

    url = RAW_URL.format(repo=LITM_REPO, commit=LITM_COMMIT, path=upstream_path)
    try:
        response = opener(url)
    except OSError as exc:  # URLError, timeouts and refused connections are OSErrors
        raise UserError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = make_temp_file(dest.parent, f".{dest.name}.", ".part")
    try:
        with (
            os.fdopen(fd, "wb") as out,
            response,
            tqdm(
                total=expected.size_bytes,
                unit="B",
                unit_scale=True,
                disable=not progress,
                desc=dest.name,
            ) as bar,
        ):
            for chunk in iter(lambda: response.read(1 << 20), b""):
                out.write(chunk)
                bar.update(len(chunk))
        verify_file(tmp, expected)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


# ---------------------------------------------------------------------------- table readers


def read_rows(path: str | Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (``file:line``, row) from .jsonl/.jsonl.gz/.json (JSON lines), .parquet, or a .zip
    holding one JSON-lines file (FLenQA's release format)."""
    p = require_file(path, "a .jsonl, .jsonl.gz, .json, .parquet or .zip data file")
    name = p.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(p)
        except Exception as exc:  # pyarrow raises several types for a bad file
            raise DataError(f"{p}: not a readable parquet file ({exc})") from None
        for i, row in enumerate(table.to_pylist(), 1):
            yield f"{p}:row {i}", row
        return
    if name.endswith(".zip"):
        with zipfile.ZipFile(p) as zf:
            members = [m for m in zf.namelist() if not m.endswith("/") and "__MACOSX" not in m]
            if len(members) != 1:
                raise DataError(f"{p}: expected one JSON-lines file inside, found {members}")
            with zf.open(members[0]) as raw:
                lines, source = io.TextIOWrapper(raw, encoding="utf-8"), f"{p}!{members[0]}"
                yield from ((f"{source}:{n}", row) for n, row in parse_jsonl_lines(lines, source))
        return
    with (gzip.open if name.endswith(".gz") else open)(p, "rt", encoding="utf-8") as fh:
        yield from ((f"{p}:{n}", row) for n, row in parse_jsonl_lines(fh, str(p)))


# --------------------------------------------------------------- Lost-in-the-Middle record types


@pydantic.dataclasses.dataclass(frozen=True)
class Document:
    """One passage as the MDQA prompt shows it (a ``ctxs`` item; other keys are ignored)."""

    title: str
    text: str
    isgold: bool = False


@pydantic.dataclasses.dataclass(frozen=True)
class QARecord:
    """One ``qa_data`` line: question, accepted answers, documents in prompt order."""

    question: str
    answers: Annotated[tuple[str, ...], Field(min_length=1)]
    ctxs: Annotated[tuple[Document, ...], Field(min_length=1)]
    where: str = ""
    """The ``file:line`` it was read from."""

    @property
    def documents(self) -> tuple[Document, ...]:
        return self.ctxs

    @property
    def gold_index(self) -> int | None:
        golds = [i for i, d in enumerate(self.documents) if d.isgold]
        return golds[0] if golds else None


@pydantic.dataclasses.dataclass(frozen=True)
class KVRecord:
    """One Lost-in-the-Middle ``kv_retrieval_data`` line: the records in order, and the pair
    asked for."""

    ordered_kv_records: Annotated[tuple[tuple[str, str], ...], Field(min_length=2)]
    key: str
    value: str
    where: str = ""
    """The ``file:line`` it was read from."""

    def __post_init__(self) -> None:
        keys = [k for k, _ in self.ordered_kv_records]
        if len(set(keys)) != len(keys) or (self.key, self.value) not in self.ordered_kv_records:
            raise ValueError(
                "ordered_kv_records: expected [key, value] pairs with distinct keys, the pair "
                "asked for among them"
            )


R = TypeVar("R", QARecord, KVRecord)


def read_records(path: str | Path, kind: type[R], verify: bool = False) -> list[R]:
    """Every line of a Lost-in-the-Middle file as a ``kind`` (errors name file, line and
    field); with ``verify``, a file named like an upstream file is first checked against the
    pinned hashes (one with other bytes would silently change results)."""
    table = {Path(k).name: v for k, v in litm_checksums().items()}
    if verify and Path(path).name in table:
        verify_file(path, table[Path(path).name])
    records: list[R] = [
        validate(kind, {**row, "where": where}, source=where) for where, row in read_rows(path)
    ]
    if not records:
        raise DataError(f"{path}: no records")
    return records


def read_qa_records(path: str | Path, verify: bool = False) -> list[QARecord]:
    """A ``qa_data`` file (``question``, ``answers``, ``ctxs``)."""
    return read_records(path, QARecord, verify)
