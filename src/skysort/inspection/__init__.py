"""Looking at data before training: duplicates and leakage, likely label errors, oddities,
a map, vote-fraction agreement, and similar images (``skysort inspect``, ``skysort similar``)."""
