"""`tinygrok` (the console script) and `python -m tinygrok`: the command line of tinygrok.cli.

Ctrl-C while its modules are still loading (the first fraction of a second) is one line and exit
130, as it is once a command runs, instead of a KeyboardInterrupt traceback.
"""

from __future__ import annotations

import sys

# the CLI's exit code for an interrupt (cli/options.py), not imported from there: the Ctrl-C this
# module catches may come before the CLI has loaded
EXIT_INTERRUPTED = 130


def main() -> None:
    """Load the command line and run it."""
    try:
        from tinygrok.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        print("tinygrok: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()
