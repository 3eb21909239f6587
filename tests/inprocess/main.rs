//! The request path in-process: the whole tower stack driven with `oneshot` over the simulator
//! or a recording upstream (`tests/support/inproc.rs`), a manual clock, no listeners; and the
//! property tests of the parsers and rules. One test binary, so `tests/support/` is built once
//! for all of them.

#[path = "../support/mod.rs"]
mod support;

mod batch;
mod canonical_props;
mod footprint;
mod mixed;
mod policy;
mod policy_table;
mod properties;
mod simulator;
