"""Database backends: one module each, with one models.database.Database subclass."""
