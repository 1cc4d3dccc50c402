//! Placeholder: replaced by the classifier bench.
fn main() {}
