"""The flagship scenario: joint credit scoring of small enterprises on government data."""
