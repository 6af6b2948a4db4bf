"""The example project: the demo page, the socket and the workers that `progrock up` runs."""
