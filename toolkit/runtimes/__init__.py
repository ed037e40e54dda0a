"""Runtimes schedule the engine's steps: Docker containers or Kubernetes Jobs."""
