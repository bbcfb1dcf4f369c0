"""Command line: ``python -m npattention gradcheck [NAME ...]`` and
``python -m npattention demo [transformer|seq2seq|vision|stn|gpt] [options]``."""
import argparse
import importlib
import sys

DEMOS = {
    # name: module in npattention/demos with a main(argv) function
    "transformer": "npattention.demos.transformer",
    "seq2seq": "npattention.demos.seq2seq",
    "vision": "npattention.demos.vision",
    "stn": "npattention.demos.stn",
    "why": "npattention.demos.why_self_attention",
    "gpt": "npattention.demos.gpt",
    "length": "npattention.demos.length_generalisation",
}
DEFAULT_DEMO = "transformer"


def run_gradcheck(argv):
    from .gradcheck import registered, run_registered

    parser = argparse.ArgumentParser(prog="python -m npattention gradcheck",
                                     description="Check every registered module's backward against finite differences.")
    parser.add_argument("names", nargs="*", help="modules to check (default: all); see --list")
    parser.add_argument("--list", action="store_true", help="list the registered modules and exit")
    parser.add_argument("--verbose", "-v", action="store_true", help="print each tensor's report")
    args = parser.parse_args(argv)
    available = registered()
    if args.list:
        print("\n".join(available))
        return 0
    unknown = [n for n in args.names if n not in available]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; registered: {', '.join(available)}")
    names = args.names or list(available)
    print(f"{'module':<34} {'cases':>5} {'tensors':>7} {'worst rel err':>14}  verdict")
    print("-" * 72)
    failed = []
    for name in names:
        reports = run_registered(name)
        tensors = sum(len(r.rows) for r in reports)
        worst = max((r.worst_rel_error for r in reports), default=0.0)
        ok = all(r.passed for r in reports)
        print(f"{name:<34} {len(reports):>5} {tensors:>7} {worst:>14.2e}  {'PASS' if ok else 'FAIL'}", flush=True)
        if args.verbose or not ok:
            for r in reports:
                print("    " + str(r).replace("\n", "\n    "))
        if not ok:
            failed.append(name)
    print("-" * 72)
    print(f"{len(names) - len(failed)} passed, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def run_demo(argv):
    name = argv[0] if argv and not argv[0].startswith("-") else DEFAULT_DEMO
    rest = argv[1:] if argv and not argv[0].startswith("-") else argv
    if name not in DEMOS:
        print(f"unknown demo {name!r}; choose from: {', '.join(DEMOS)}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(DEMOS[name])
    except ModuleNotFoundError as err:
        if err.name != DEMOS[name]:
            raise
        print(f"the {name!r} demo is not available yet", file=sys.stderr)
        return 2
    return module.main(rest) or 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    commands = {"gradcheck": run_gradcheck, "demo": run_demo}
    if not argv or argv[0] not in commands:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
