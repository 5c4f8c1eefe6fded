//! A fresh database on the test PostgreSQL (CORDON_TEST_DATABASE_URL, which tests/run.sh sets and
//! starts the server for). A test that needs PostgreSQL fails when it is unreachable: it never
//! skips.

use sqlx::Connection;

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub async fn fresh_database() -> String {
    let base = std::env::var("CORDON_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {base} is required for this test: {e}"));
    let name = format!("cordon_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (prefix, _) = base
        .rsplit_once('/')
        .expect("database URL ends with /dbname");
    format!("{prefix}/{name}")
}
