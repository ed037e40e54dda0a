"""Work on a running PostgreSQL server through psycopg: inspect, fingerprint, repair, verify."""
