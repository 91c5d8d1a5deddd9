//! Conflicts: listed, and held ones decided.
