"""Small reference networks and the model-config base every backbone registers with."""
