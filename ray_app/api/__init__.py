"""The HTTP layer: FastAPI routes hosted by Ray Serve. Thin: validate, authorize, call the store."""
