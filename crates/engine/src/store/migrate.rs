//! The state store's schema: one list of migrations for both backends, embedded in the
//! binary and applied in order when a store is opened.
//!
//! A migration, once released, never changes (its checksum is checked on every open); a new
//! schema is a new file in `migrations/` and a new entry in [`MIGRATIONS`].

use std::ops::Deref;
use std::time::Duration;

use sqlx::migrate::{Migrate, MigrateError, Migration, MigrationType, Migrator};
use sqlx::{Acquire, SqlSafeStr};

use crate::store::{StoreError, StoreUrl};

/// The migrations, in version order: (version, description, SQL).
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("migrations/0001_initial.sql")),
    (
        2,
        "record keys",
        include_str!("migrations/0002_record_keys.sql"),
    ),
    (
        3,
        "pair state sides",
        include_str!("migrations/0003_pair_state_sides.sql"),
    ),
    (
        4,
        "unlinked records",
        include_str!("migrations/0004_unlinked.sql"),
    ),
    (
        5,
        "parked record actions",
        include_str!("migrations/0005_parked_actions.sql"),
    ),
    (6, "history", include_str!("migrations/0006_history.sql")),
    (
        7,
        "manual conflicts",
        include_str!("migrations/0007_manual_conflicts.sql"),
    ),
    (
        8,
        "run triggers and alert incidents",
        include_str!("migrations/0008_run_triggers_and_alerts.sql"),
    ),
    (
        9,
        "parked deletes",
        include_str!("migrations/0009_parked_deletes.sql"),
    ),
];

/// The schema version this build writes: the last migration's.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// How often opening retries migrations that failed because another process was applying
/// the same ones.
const MIGRATION_ATTEMPTS: u32 = 5;

/// Applies the missing migrations. A store that has a migration this build does not know
/// was written by a newer tether: it is refused before anything is changed.
///
/// PostgreSQL serialises migrators with an advisory lock; SQLite has none, so two processes
/// opening a fresh file at once can both try the first migration. The loser's attempt fails
/// on the winner's tables, and trying again finds them applied.
pub(crate) async fn run<'a, A>(url: &StoreUrl, pool: A) -> Result<(), StoreError>
where
    A: Acquire<'a> + Copy,
    <A::Connection as Deref>::Target: Migrate,
{
    let migrator = migrator();
    let mut attempt = 1;
    loop {
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            Err(MigrateError::VersionMissing(found)) if found > SCHEMA_VERSION => {
                return Err(StoreError::SchemaTooNew {
                    url: url.to_string(),
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            Err(MigrateError::Execute(_) | MigrateError::ExecuteMigration(..))
                if attempt < MIGRATION_ATTEMPTS =>
            {
                tracing::debug!(store = %url, attempt, "migration raced another process, retrying");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            Err(source) => {
                return Err(StoreError::Migrate {
                    url: url.to_string(),
                    source: Box::new(source),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_in_strict_version_order() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.0).collect();
        assert!(versions.windows(2).all(|pair| pair[0] < pair[1]));
        assert_eq!(SCHEMA_VERSION, *versions.last().unwrap_or(&0));
    }
}
