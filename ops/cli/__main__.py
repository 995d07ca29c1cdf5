"""`python -m ops.cli`: the same CLI without the installed `quicfleet` script."""

from ops.cli import main

main()
