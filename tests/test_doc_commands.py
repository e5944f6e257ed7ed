"""Every shell command in the README and docs/ works as written.

Commands run offline on CPU from a temporary copy of the repository's configs, with
``NEEDLEWORK_DATA`` pointing at the shared data checkout, in the order the docs give them (a
later command may read what an earlier one wrote). A command tagged in its trailing comment
``[gpu]``, ``[key]``, ``[long]`` or ``[yours]`` (or started through ``accelerate launch`` /
``torchrun``) is checked for argument and config validity only (``--dry-run``, or the argument
parser for verbs without one). Lines with a placeholder (``...``, ``FILE``, ``RECIPE``) are syntax
forms, not commands. Other programs (make, pip, lm_eval) are not run here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import SHARED_DATA

from needlework.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TAGS = ("[gpu]", "[key]", "[long]", "[yours]")
PLACEHOLDER = re.compile(r"\.\.\.|\b(FILE|RECIPE|DIR|NAME)\b")
CHECK_ONLY_VERBS = {"generate", "train", "eval", "run"}  # verbs with --dry-run


def doc_commands() -> list[tuple[str, int, str, str]]:
    """(file, line, command, trailing comment) for every needlework command in a bash block."""
    out = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for block in re.finditer(r"```(?:bash|sh)\n(.*?)```", text, re.S):
            first = text[: block.start(1)].count("\n") + 1
            lines = block.group(1).split("\n")
            i = 0
            while i < len(lines):
                start, line = i, lines[i]
                while line.rstrip().endswith("\\") and i + 1 < len(lines):
                    i += 1
                    line = line.rstrip()[:-1] + " " + lines[i].strip()
                i += 1
                code, _, comment = line.strip().partition("  # ")
                code = code.strip()
                if code.startswith("#") or "needlework" not in code.split("#")[0]:
                    continue
                if not (
                    code.startswith("needlework ") or " -m needlework " in code
                ) and not re.match(r"^[A-Z_]+=\S+ needlework ", code):
                    continue
                out.append((path.name, first + start, code, comment))
    return out


COMMANDS = doc_commands()


def test_the_docs_have_commands_and_tags_are_known():
    assert len(COMMANDS) > 30
    for name, line, _code, comment in COMMANDS:
        for tag in re.findall(r"\[[a-z]+\]", comment):
            assert tag in TAGS, f"{name}:{line}: unknown tag {tag} (known: {TAGS})"


def _argv(code: str) -> tuple[dict[str, str], list[str]]:
    words = shlex.split(code)
    env = {}
    while words and re.match(r"^[A-Z_]+=", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if "-m" in words and words[words.index("-m") + 1] == "needlework":
        words = words[words.index("-m") + 1 :]  # the launched command
    assert words[0] == "needlework", code
    return env, words[1:]


@pytest.mark.real_model  # the bundled SmolLM2 runs in two of the commands
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs the shared data checkout")
def test_every_documented_command_runs_as_written(tmp_path):
    for sub in ("configs",):
        shutil.copytree(REPO / sub, tmp_path / sub)
    env = {**os.environ, "NEEDLEWORK_DATA": str(SHARED_DATA), "TQDM_DISABLE": "1"}
    ran, checked, forms = [], [], []
    for name, line, code, comment in COMMANDS:
        where = f"{name}:{line}: {code}"
        if PLACEHOLDER.search(code.split(" needlework ", 1)[-1]):
            forms.append(where)
            continue
        extra, argv = _argv(code)
        launched = not code.startswith("needlework ") and " -m needlework " in code
        check_only = launched or any(t in comment for t in TAGS) or "OPENAI_API_KEY" in extra
        if check_only and ("[yours]" in comment or argv[0] not in CHECK_ONLY_VERBS):
            build_parser().parse_args(argv)  # your own folders or server: the arguments parse
            checked.append(f" parse {where}")
            continue
        if check_only:
            argv = [*argv, "--dry-run"]
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "needlework", *argv],
            cwd=tmp_path,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"{where}\n{proc.stderr[-3000:]}"
        took = f"{time.monotonic() - start:5.1f}s {where}"
        (checked if "--dry-run" in argv else ran).append(took)
    print("\n".join(ran + checked))
    assert len(ran) >= 10 and len(checked) >= 15, (ran, checked, forms)
