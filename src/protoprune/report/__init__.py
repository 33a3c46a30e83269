"""Figures and reports a user looks at."""
