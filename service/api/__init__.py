"""HTTP routers of the service, one per resource."""
