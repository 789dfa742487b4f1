"""HTTP API bodies: typed, versioned pydantic models shared by the services and their clients."""
