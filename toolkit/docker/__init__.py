"""The Docker runtime: containers and volumes, replicas, rehearsals, images."""
