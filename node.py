#!/usr/bin/env python3
"""swift node: serves fetch jobs for peers and downloads for its user (see README)."""
import sys

from swift.cli import node_main

if __name__ == "__main__":
    sys.exit(node_main())
