"""``python -m needlework.evaluation.lm_eval_tasks``: the include path, or export tasks.

    python -m needlework.evaluation.lm_eval_tasks path
    python -m needlework.evaluation.lm_eval_tasks export CONFIG OUT_DIR [--limit N] [key=value ...]

CONFIG is an eval config (its ``benchmarks:`` list) or one benchmark unit (a mapping with
``name:``); overrides apply to it as in ``needlework eval`` (``benchmarks`` lists cannot be
overridden here: edit the file).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from needlework.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m needlework.evaluation.lm_eval_tasks", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("path", help="print the folder to pass to lm_eval --include_path")
    ex = sub.add_parser("export", help="write lm-eval tasks for the benchmarks of a config")
    ex.add_argument("config")
    ex.add_argument("out_dir")
    ex.add_argument("--limit", type=int, default=None, help="first N samples per benchmark")
    ex.add_argument("overrides", nargs="*", help="dotted.key=value")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "path":
            from needlework.evaluation.lm_eval_tasks import include_path

            print(include_path())
            return 0
        for path in export_config(
            args.config, args.out_dir, limit=args.limit, overrides=args.overrides
        ):
            print(path)
        return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def export_config(
    config: str, out_dir: str, *, limit: int | None = None, overrides: list[str] | None = None
) -> list:
    """Export every benchmark of an eval config (or a single benchmark unit file)."""
    from typing import Annotated

    from needlework.config import apply_overrides, read_yaml, validate
    from needlework.evaluation.lm_eval_tasks import export
    from needlework.registry import benchmarks

    data = apply_overrides(read_yaml(config), overrides or [])
    if "benchmarks" not in data and "name" not in data:
        raise UserError(f"{config}: expected a 'benchmarks:' list or a benchmark unit with 'name:'")
    units = data.get("benchmarks", [data])
    built: list[Any] = validate(
        list[Annotated[Any, benchmarks]],
        units,
        source=config,
        prefix="benchmarks" if "benchmarks" in data else "benchmark",
    )
    # the general suite already is lm-eval
    paths = [export(b, out_dir, limit=limit) for b in built if not hasattr(b, "run_suite")]
    if not paths:
        raise UserError(f"{config}: no benchmark to export (general runs in lm-eval already)")
    return paths


if __name__ == "__main__":
    raise SystemExit(main())
