"""The platform database: schema and migrations, training requests, the audit log."""
