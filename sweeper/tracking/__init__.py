"""MLflow: what sweeper writes, how it reads it back, retries."""
