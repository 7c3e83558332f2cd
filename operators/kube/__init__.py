"""The Kubernetes room: the only code that talks to the API server."""
