"""The control plane: settings, Celery, registry adapter, lifecycle, database, CLI."""
