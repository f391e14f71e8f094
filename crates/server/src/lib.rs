//! sprout's HTTP serving layer.
