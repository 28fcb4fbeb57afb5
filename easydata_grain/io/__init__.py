"""Storage: URL -> filesystem, listing that never swallows errors, retries, resumable reads."""
