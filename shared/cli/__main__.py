"""`python -m shared.cli`: the same CLI without the installed `quicfleet` script."""

from shared.cli import main

main()
