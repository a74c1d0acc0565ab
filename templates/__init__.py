"""The report's Jinja templates, shipped as the package ``report.templates`` (see pyproject.toml),
so an installed wheel finds them as package resources wherever it runs."""
