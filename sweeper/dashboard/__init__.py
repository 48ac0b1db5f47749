"""Dashboards for d90 vs r90, read from MLflow: `read` (the store → a snapshot), `views`
(snapshot → view data, pure), `render` (one self-contained HTML page from the `dashboards/`
templates), `server` (the live page), `export` (CSV / Parquet of the summary) and `cli`
(`sweeper report`, `sweeper dashboard`)."""

DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default
