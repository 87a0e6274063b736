"""fedcore.algorithms: one folder per federated method."""
