"""The sweep on Ray Tune: the trainable, the Tuner, the callbacks that close MLflow runs, and the run itself."""
