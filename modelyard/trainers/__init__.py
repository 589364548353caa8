"""Dataset + spec -> trained, evaluated Keras model. No MLflow, no Celery, no platform imports."""
