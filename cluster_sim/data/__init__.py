"""Data plane: block versions, captures, RCT, restore and verification."""
