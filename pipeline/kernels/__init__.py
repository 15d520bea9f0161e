"""Speed helpers behind one door: domain code calls these, and they know nothing of B12."""
