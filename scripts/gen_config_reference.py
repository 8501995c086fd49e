#!/usr/bin/env python3
"""Print the configuration reference (a Markdown table of every field) generated from the schema.

The README embeds this output, so the table cannot drift from ``heidi_engine.bus.config``:

    python scripts/gen_config_reference.py                  # print the table
    python scripts/gen_config_reference.py --check README.md  # exit 1 if README.md lacks the current table
"""

from __future__ import annotations

import argparse
import sys

from heidi_engine.bus.config import config_reference_markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", metavar="FILE", help="verify FILE contains the current table instead of printing it"
    )
    args = parser.parse_args(argv)
    table = config_reference_markdown()
    if args.check is None:
        sys.stdout.write(table)
        return 0
    try:
        with open(args.check, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        print(f"{args.check}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if table in text:
        return 0
    print(
        f"{args.check}: the configuration table is out of date; replace it with the output of"
        " python scripts/gen_config_reference.py",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
