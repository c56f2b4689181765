"""Host-side (numpy) input preparation."""
