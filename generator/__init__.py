"""Pure ML: models, pipelines, training, encoding, metrics. Imports no Django."""
