"""Where a model comes from and how it is loaded: sources (hub, folder, bundled, GGUF),
checkpoint files, family facts (torch-free), and the loader (the only module here that imports torch)."""
