//! Tether's integration tests, in one binary (one link of the whole world instead of one per
//! file). Each module is one area as a user meets it; fixtures live beside this folder in
//! `tests/mapping/`, `tests/validate/` and `tests/contracts/`.

mod connector;
mod console;
mod docs;
mod mapping;
mod ops;
mod realapi;
mod sandbox;
mod serve;
mod store;
mod sync;
mod validate;

/// The PostgreSQL server the store and worker tests use (`TETHER_TEST_POSTGRES`). Without
/// it those tests say they were skipped; where a skip is not acceptable (CI sets
/// `TETHER_REQUIRE_POSTGRES=1`) a missing server fails them instead.
pub fn test_postgres() -> Option<String> {
    match std::env::var("TETHER_TEST_POSTGRES") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var_os("TETHER_REQUIRE_POSTGRES").is_none(),
                "TETHER_REQUIRE_POSTGRES is set but TETHER_TEST_POSTGRES is not: the PostgreSQL tests cannot be skipped here"
            );
            println!("skipped: TETHER_TEST_POSTGRES is not set");
            None
        }
    }
}
