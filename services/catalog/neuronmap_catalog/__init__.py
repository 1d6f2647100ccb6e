"""The catalog service: a DuckDB index of runs and analyses, the only process that opens the file."""
