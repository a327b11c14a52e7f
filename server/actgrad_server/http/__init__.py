"""actgrad's HTTP/JSON front end: actgrad's own routes (/v1/) and the OIP REST routes."""
