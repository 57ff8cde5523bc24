"""Dataset manifests (file counts, checksums, protocol definitions) shipped as package data."""
