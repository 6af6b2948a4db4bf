"""The 2017 ProgRock demo, ported literally to Channels 4: the benchmark baseline."""
