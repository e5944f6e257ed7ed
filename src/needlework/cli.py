"""The ``needlework`` command: one verb per pipeline stage.

Each verb's handler lives in its stage package (``<stage>/cli.py``) so this file only declares
arguments. User errors print one line and exit 2; anything else is a bug and shows a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from needlework import __version__
from needlework.errors import UserError

# verb -> "module:function" taking the parsed args and returning an exit code.
HANDLERS = {
    "generate": "needlework.datagen.cli:generate_cmd",
    "inspect": "needlework.datagen.cli:inspect_cmd",
    "train": "needlework.training.cli:train_cmd",
    "eval": "needlework.evaluation.cli:eval_cmd",
    "report": "needlework.reporting.cli:report_cmd",
    "run": "needlework.experiment:run_cmd",
    "demo": "needlework.demo:demo_cmd",
    "model": "needlework.models.cli:model_cmd",
    "ls": "needlework.cli:ls_cmd",
    "validate": "needlework.cli:validate_cmd",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="needlework", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"needlework {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    def cfg_verb(name: str, help: str) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help, description=help)
        s.add_argument("--config", required=name != "eval", metavar="FILE", help="YAML config")
        s.add_argument(
            "overrides",
            nargs="*",
            metavar="key=value",
            help="dotted overrides, e.g. generator.num_dicts=40 seed=1",
        )
        s.add_argument(
            "--dry-run",
            action="store_true",
            help="load and check the config with its overrides, then stop (nothing is run)",
        )
        return s

    g = cfg_verb("generate", "Generate synthetic retrieval datasets.")
    g.add_argument(
        "--num-samples",
        type=int,
        metavar="N",
        help="override every split's sample count (quick dry runs)",
    )
    g.add_argument("--no-progress", action="store_true")

    i = sub.add_parser("inspect", help="Summarise a generated dataset file or folder.")
    i.add_argument("data", metavar="DATA")

    t = cfg_verb("train", "Finetune a model (TRL/PEFT locally, or the OpenAI API).")
    t.add_argument("--resume", action="store_true", help="resume from the last checkpoint")

    e = cfg_verb("eval", "Evaluate a model on long-context or general benchmarks.")
    e.add_argument("--model", metavar="BACKEND:PATH", help="short form, e.g. hf:./model")
    e.add_argument(
        "--benchmark",
        action="append",
        metavar="NAME",
        help="short form; repeatable (mdqa, flenqa, kv_retrieval, niah)",
    )
    e.add_argument("--suite", choices=["general"], help="lm-evaluation-harness general suite")
    e.add_argument(
        "--gold-answers",
        action="store_true",
        help="the oracle run: answer with each sample's gold answer, no model (all scores 1.0)",
    )
    e.add_argument("--limit", type=int, metavar="N", help="only the first N samples")
    e.add_argument("--out", metavar="DIR", help="run folder (default runs/<time>-<bench>-<model>)")
    e.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="data-parallel: N processes on this machine, each with cores/N threads; under "
        "accelerate launch or torchrun the launcher's processes are used",
    )

    r = sub.add_parser("report", help="Compare run folders: markdown, CSV, PNG plots.")
    r.add_argument("runs", nargs="+", metavar="RUN")
    r.add_argument("--out", default="report", metavar="DIR")
    r.add_argument("--html", action="store_true", help="also write an HTML page with samples")
    r.add_argument(
        "--cells",
        metavar="FIELD,FIELD",
        help="also compare each variant with the baseline in every combination of these sample "
        "fields, unpaired (samples may differ: e.g. official vs re-created FLenQA rows by "
        "task,ctx_size,dispersion)",
    )
    r.add_argument(
        "--baseline",
        metavar="LABEL",
        help="variant the deltas are taken against (default: 'base', else the first)",
    )

    x = sub.add_parser("run", help="Run a whole experiment recipe (resumable).")
    x.add_argument("recipe", metavar="RECIPE")
    x.add_argument("overrides", nargs="*", metavar="key=value")
    x.add_argument("--dry-run", action="store_true", help="print the steps, run nothing")
    x.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="run up to N training/evaluation steps at once, each in its own process with "
        "cores/N threads (logs in OUT_DIR/logs/); 2 on a 2-core CPU",
    )
    x.add_argument("--step", type=int, metavar="K", help="run only step K (as --dry-run lists)")

    d = sub.add_parser("demo", help="Tiny end-to-end run on CPU (make demo).")
    d.add_argument("--out", default="demo_out", metavar="DIR")

    m = sub.add_parser("model", help="Import GGUF models (files or bundled) as model folders.")
    ma = m.add_subparsers(dest="action", required=True, metavar="ACTION")
    mi = ma.add_parser(
        "import",
        help="Dequantize a .gguf file or bundled alias into a save_pretrained folder.",
    )
    mi.add_argument("src", metavar="SRC", help="a .gguf file or a bundled alias (model ls)")
    mi.add_argument("--out", required=True, metavar="DIR", help="new (or empty) model folder")
    mi.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ma.add_parser("ls", help="List the bundled models, whether installed, and the cache folder.")

    ls = sub.add_parser("ls", help="List registered units; `ls NAME` shows one unit's fields.")
    ls.add_argument(
        "name", nargs="?", metavar="NAME", help="a unit (mdqa, hf_sft) or a config kind (recipe)"
    )
    v = sub.add_parser("validate", help="Load and check config files without running them.")
    v.add_argument("files", nargs="+", metavar="FILE")
    return p


def ls_cmd(args: argparse.Namespace) -> int:
    from needlework.registry import ALL

    if getattr(args, "name", None):
        return _ls_unit(args.name)
    for kind, registry in ALL.items():
        print(f"{kind}:")
        for name, cls in registry.items():
            doc = (cls.__doc__ or "").strip().splitlines()
            print(f"  {name:<24} {doc[0] if doc else ''}")
    return 0


def _ls_unit(name: str) -> int:
    """One unit's config fields, from its schema: type, limits, default and the docstring
    written under the field."""
    import difflib

    from needlework.config import CONFIG_KINDS, config_class, describe_fields
    from needlework.registry import ALL

    files = [kind for kind, _ in CONFIG_KINDS.values()]  # a config file kind: its fields
    found = [(kind, reg.get(name)) for kind, reg in ALL.items() if name in reg.names()]
    if name in files:
        found = [("config files", config_class(name))]
    if not found:
        every = [n for reg in ALL.values() for n in reg.names()] + files
        close = difflib.get_close_matches(name, every, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"no unit named '{name}'{hint} (needlework ls lists them)")
    for kind, cls in found:
        doc = (cls.__doc__ or "").strip().splitlines()
        print(f"{name} ({kind[:-1]}): {doc[0] if doc else ''}")
        for field, kind_text, default, text in describe_fields(cls):
            print(f"  {field}: {kind_text} = {default}")
            for line in text.splitlines():
                print(f"      {line.strip()}")
    return 0


def config_files(paths: Sequence[str]) -> list[Path]:
    """The files named, folders expanded to every ``*.yaml``/``*.yml`` under them (sorted)."""
    out: list[Path] = []
    for name in paths:
        p = Path(name)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
            if not found:
                raise UserError(f"{p}: a folder with no *.yaml or *.yml config files")
            out += found
        else:
            out.append(p)
    return out


def validate_cmd(args: argparse.Namespace) -> int:
    """Check every file (folders recursively), report each, exit 2 if any failed."""
    from needlework.config import CONFIG_KINDS, config_class, config_kind, load_config, read_yaml

    failed = 0
    files = config_files(args.files)
    for path in files:
        try:
            data = read_yaml(path)
            kind = config_kind(data)
            if kind is None:
                keys = ", ".join(CONFIG_KINDS)
                raise UserError(
                    f"{path}: cannot tell the config kind: expected one of the top-level keys "
                    f"{keys}"
                )
            if kind == "accelerate":
                print(f"skip {path}  (an accelerate config: read by accelerate launch)")
                continue
            cls = config_class(kind)
            load_config(cls, path, data=data)  # a recipe: with every config it names
        except UserError as exc:
            if len(files) == 1:
                raise
            failed += 1
            print(f"FAIL {exc}", file=sys.stderr)
            continue
        print(f"ok   {path}  ({cls.__name__})")
    if failed:
        raise UserError(f"{failed} of {len(files)} config files failed")
    return 0


def _terminate_like_ctrl_c() -> None:
    """SIGTERM (a scheduler, ``timeout``, ``kill``) unwinds like Ctrl-C: staging folders are
    removed, run.json says interrupted, finished outputs stay."""
    import signal
    import threading

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may follow flags (`generate --config X --no-progress seed=1`): argparse stops the
    # positional list at the first flag, so collect the leftovers that look like overrides.
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    args.argv = list(argv) if argv is not None else None
    from needlework.config import load_target
    from needlework.runtime import configure_threads

    _terminate_like_ctrl_c()
    try:
        configure_threads()  # before torch loads; also checks the environment (runtime.settings)
        return int(load_target(HANDLERS[args.verb])(args) or 0)
    except UserError as exc:
        print(f"needlework {args.verb}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `needlework ls | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        # on a line of its own (a progress bar may be mid-line), with what to do next
        print(
            f"\nneedlework {args.verb}: interrupted; finished outputs are kept (run the same "
            "command again to resume)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
