"""The web console (served by the API at /)."""
