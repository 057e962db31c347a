"""Command line: `python -m lmfeatures probe ...` (see lmfeatures.probe) and `python -m lmfeatures
check-config FILE` (see lmfeatures.config.main)."""

import sys

COMMANDS = {"probe": "lmfeatures.probe", "check-config": "lmfeatures.config"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m lmfeatures {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
