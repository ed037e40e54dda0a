"""`scripts/bench`: downtime of pgleap next to bare pg_upgrade and pg_dumpall | psql, measured in one run.

datasets.py makes seeded datasets on a golden volume, harness.py clones it for
every method and cleans up, methods.py runs the four ways to upgrade, summary.py
prints the table and writes the JSON.
"""
