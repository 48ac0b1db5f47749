"""A remote Ray cluster: submitting a job through Ray Jobs and following it there."""
