"""Backfill and keep current OHLCV bars and financial-ML labels with Dagster."""
