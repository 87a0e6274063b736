"""fedcore inside other federated-learning stacks. ``fedcore.integrations.flower``: Flower apps,
strategies and the control-plane mode (the optional extra ``fedcore[flower]``)."""
