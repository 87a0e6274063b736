"""fedcore's Flower app (components in server_app.py and client_app.py)."""
