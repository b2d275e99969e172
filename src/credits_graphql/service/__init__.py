"""Async use cases. Each is one transaction through a unit of work; the rules live in `domain`."""
