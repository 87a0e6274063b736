"""The ServerApp: fedcore's method of the run's config (fedcore.integrations.flower.server_app)."""

from pathlib import Path

from fedcore.integrations.flower import server_app

app = server_app(app_dir=Path(__file__).resolve().parent.parent)
