"""`python -m toolkit` is `pgleap`."""

from toolkit.cli import main

main()
