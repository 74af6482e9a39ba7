"""The `kd` command line: local runs (kdcore), the service client (httpx) and admin commands."""
