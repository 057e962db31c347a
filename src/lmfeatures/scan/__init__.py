"""Dataset max-activation scans of every unit of every layer, and the neuron selection the later
stages share."""
