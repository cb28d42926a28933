"""Bar providers behind one interface (pure: no Dagster)."""
