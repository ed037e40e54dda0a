"""`python -m toolkit` is `pgleap`."""

from toolkit.cli.app import main

main()
