"""modelyard: model lifecycle platform with edge export."""

__version__ = "0.1.0"
