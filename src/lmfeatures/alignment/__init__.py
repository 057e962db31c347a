"""Feature alignment (seed 001's essay): the input maximising each feature found four ways, and
alignment metrics with their nulls."""
