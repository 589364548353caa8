-- One server, two databases: MLflow's tracking store and modelyard's platform database.
CREATE DATABASE mlflow;
CREATE DATABASE modelyard;
