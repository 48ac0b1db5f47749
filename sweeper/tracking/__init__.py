"""MLflow: the names sweeper stores (`schema`), the writer (`write`), reading back (`read`),
and waiting out a tracking server that is down (`retry`)."""
