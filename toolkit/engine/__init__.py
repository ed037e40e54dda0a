"""The phase runner: upgrade, minimal-downtime order, rollback/finalize, the run state."""
