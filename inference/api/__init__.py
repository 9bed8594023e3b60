"""The inference app's REST API: the findings vocabulary (reads, model versions and feedback follow)."""
