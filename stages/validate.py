"""Stage validate: check all of params.yaml before any other stage runs (they all depend on its output).

DVC removes a stage's outputs before running it. Every other stage depends on ``--out`` (whose content never
changes), so a bad params.yaml fails here, first, and no result is deleted.
"""

import sys

from stages import cli

MARKER = "params.yaml passed lmask.params validation (stage validate); other stages depend on this file.\n"


def main() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cli.params(args)
    from lmask.io import remote_warnings, write_text

    for warning in remote_warnings():  # a warning, not an error: the pipeline itself does not need a remote
        print(warning, file=sys.stderr)
    write_text(args.out, MARKER)
    print("params.yaml is valid")


if __name__ == "__main__":
    cli.run(main)
