"""Model folders: locating and checking them, loading LTX-Video components, building tiny ones."""
