"""bootkit-autoscale: the pool follows the load."""
