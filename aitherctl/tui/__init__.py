"""The Textual live monitor. Only this package imports Textual."""
