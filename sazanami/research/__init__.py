"""Research systems built from the project's seeds; outside the decoding hot path."""
