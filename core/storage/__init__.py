"""Storage interfaces (blobs, catalog, vectors, cache), one module per backend beneath each."""
