"""The seed's ProgRock, ported literally to Channels 4: the benchmark baseline."""
