"""Stage 3: evaluation. Importing this package registers every benchmark."""
