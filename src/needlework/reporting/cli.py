"""``needlework report RUN [RUN ...] --out DIR [--baseline LABEL] [--html]``."""

from __future__ import annotations

import argparse
import sys


def report_cmd(args: argparse.Namespace) -> int:
    """Write the report; list the problems found on stderr so they are not missed."""
    from needlework.reporting.report import build_report

    result = build_report(
        args.runs,
        args.out,
        html=bool(getattr(args, "html", False)),
        baseline=getattr(args, "baseline", None),
        cells=tuple(args.cells.split(",")) if getattr(args, "cells", None) else (),
    )
    for problem in result.problems:
        print(f"needlework report: warning: {problem}", file=sys.stderr)
    print(f"report: {result.path} ({len(result.files)} files, baseline: {result.baseline})")
    return 0
