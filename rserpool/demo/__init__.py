"""Demo services built on the RSerPool libraries (the echo pool element)."""
