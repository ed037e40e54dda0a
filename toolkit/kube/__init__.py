"""The Kubernetes runtime: API client, facts, manifests, Jobs, rehearsal, hooks."""
