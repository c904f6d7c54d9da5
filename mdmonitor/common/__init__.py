"""Helpers every stage uses: reading structures and labels, atomic file writes, setting checks."""
