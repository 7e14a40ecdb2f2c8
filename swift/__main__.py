"""``python3 -m swift discovery|node ...``: the two programs of an installed swift."""

import sys

from .cli import discovery_main, node_main


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("discovery", "node"):
        print("usage: python3 -m swift discovery|node [options]", file=sys.stderr)
        return 2
    program, argv = sys.argv[1], sys.argv[2:]
    main = discovery_main if program == "discovery" else node_main
    return main(argv, prog=f"python3 -m swift {program}")


if __name__ == "__main__":
    sys.exit(main())
