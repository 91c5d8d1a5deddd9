//! Tether's integration tests, in one binary (one link of the whole world instead of one per
//! file). Each module is one area as a user meets it; fixtures live beside this folder in
//! `tests/mapping/`, `tests/validate/` and `tests/contracts/`.

mod connector;
mod docs;
mod mapping;
mod ops;
mod sandbox;
mod serve;
mod store;
mod sync;
mod validate;
