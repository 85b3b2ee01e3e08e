"""Rating models. Each file holds one model and cites its paper; all register under the
`rrnx.models` entry-point group (see pyproject.toml and docs/plugins.md)."""
