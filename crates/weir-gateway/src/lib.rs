//! Weir data plane.
