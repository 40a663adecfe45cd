"""Build, export and smoke-test the serving image (host side: needs the Docker SDK)."""
