"""The ClientApp: this node serves shard node_config["partition-id"] of the run's config."""

from pathlib import Path

from fedcore.integrations.flower import client_app

app = client_app(app_dir=Path(__file__).resolve().parent.parent)
