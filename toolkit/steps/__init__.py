"""psycopg work on a running cluster: inspection, post-upgrade, verification."""
