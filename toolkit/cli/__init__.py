"""The command line: `pgleap` and `kubectl pgleap`."""
