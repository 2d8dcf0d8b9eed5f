"""batchcast."""
