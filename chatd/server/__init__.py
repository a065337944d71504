"""The daemon: the binary front end, the service and its operations."""
