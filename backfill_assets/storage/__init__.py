"""Bar stores behind one interface (pure: no Dagster)."""
