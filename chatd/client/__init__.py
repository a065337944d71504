"""chatd-client: the terminal client."""
