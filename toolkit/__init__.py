"""pgleap: major-version upgrades of PostgreSQL + PostGIS on their own volume."""

__version__ = "0.1.0"
