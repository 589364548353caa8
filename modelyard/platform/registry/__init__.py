"""The registry interface, its MLflow adapter, tracking, the alias lifecycle, the gate and promotion."""
