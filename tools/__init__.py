"""Practice desktop, demonstration recording, training and data conversion."""
