//! The `sprout` command line.

fn main() {}
