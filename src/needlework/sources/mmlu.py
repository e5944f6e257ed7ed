"""MMLU's release files (Hendrycks et al., 2021, arXiv:2009.03300): the tarball of
``mmlu/<split>/<subject>_<split>.csv`` files, read by the general suite and by the MMLU chat
rows generator."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path
from typing import Any

from needlework.errors import DataError

LETTERS = "ABCD"


def mmlu_csv_split(tar_path: Path, split: str) -> list[dict[str, Any]]:
    """Every question of one split (``dev``, ``val``, ``test``) of the MMLU release tarball, in
    cais/mmlu's schema (answer = index), subjects in name order."""
    folder, suffix = f"mmlu/{split}/", f"_{split}.csv"
    files: list[tuple[str, str]] = []
    try:
        with tarfile.open(tar_path, "r:gz") as tar:
            for member in sorted(tar.getmembers(), key=lambda m: m.name):
                name = member.name
                if member.isfile() and name.startswith(folder) and name.endswith(suffix):
                    raw = tar.extractfile(member).read()  # type: ignore[union-attr]
                    files.append((name, raw.decode("utf-8")))
    except (tarfile.TarError, OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(
            f"{tar_path}: not a readable MMLU release tarball (a .tar.gz of mmlu/<split>/*.csv): "
            f"{exc}"
        ) from None
    out: list[dict[str, Any]] = []
    for name, raw in files:
        subject = Path(name).name[: -len(suffix)]
        for j, rec in enumerate(csv.reader(io.StringIO(raw)), 1):
            if len(rec) != 6 or rec[5] not in LETTERS:
                raise DataError(
                    f"{tar_path}:{name}:{j}: expected 6 CSV columns ending in an answer letter A-D"
                )
            out.append(
                {
                    "question": rec[0],
                    "subject": subject,
                    "choices": rec[1:5],
                    "answer": LETTERS.index(rec[5]),
                }
            )
    return out
