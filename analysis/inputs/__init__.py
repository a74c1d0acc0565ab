"""The torch-free inputs: config-named files (word lists, prompt files), their
limits and text checks, and the preflight that checks everything before a model is loaded."""
