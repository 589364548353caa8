"""The `modelyard` command line, its views and demos: a face over the same functions the API uses."""
