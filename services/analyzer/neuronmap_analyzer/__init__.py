"""The analyzer service: out-of-core statistics of runs in the activation lake."""
