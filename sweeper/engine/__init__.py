"""Runs a job: the plan of probes, the Tune searcher and driver, one probe's life."""
