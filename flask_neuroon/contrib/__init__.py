"""Integrations with other tools; each is imported only when used."""
