"""Everything MLflow: which store, the private server, the sweep's runs, the teacher's run, models as MLflow models."""
