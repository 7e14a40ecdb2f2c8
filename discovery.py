#!/usr/bin/env python3
"""swift discovery daemon: tracks which nodes are alive (see README)."""
import sys

from swift.cli import discovery_main

if __name__ == "__main__":
    sys.exit(discovery_main())
