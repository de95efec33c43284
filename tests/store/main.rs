//! The store against both backends: every case runs once on a fresh SQLite file
//! and once on a fresh PostgreSQL schema (`<case>::sqlite`, `<case>::postgres`).
//!
//! PostgreSQL: `SCIP_TEST_POSTGRES_URL`, else `postgres://postgres@127.0.0.1:5432/test`,
//! else the same as `root`. Each test gets its own schema, dropped at the end, so
//! tests run in parallel. An unreachable PostgreSQL fails the test.

/// Generates `<case>::sqlite` and `<case>::postgres` for each async fn
/// `case(&TestDb)`.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = super::TestDb::sqlite().await;
                super::$case(&db).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let db = super::TestDb::postgres().await;
                super::$case(&db).await;
            }
        }
    )*};
}

mod connect;
mod control;
mod deliveries;
mod durability;
mod exercises;
mod leases;
mod support;
