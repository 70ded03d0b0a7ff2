"""Small AWS adapters, passed into the domain. Clients honour AWS_ENDPOINT_URL (the sandbox sets it)."""
