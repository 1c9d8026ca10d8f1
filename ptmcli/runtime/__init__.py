"""What every part of ptm may use at run time without depending on training: device and precision, random state, caches."""
