//! Support shared by the workspace's tests and `cargo xtask`: [`postgres::TestDatabase`], a
//! fresh database per test on the shared server, and [`pg_cluster::PgCluster`], a server of a
//! test's own for tests that stop or restart it (and for `cargo xtask test` on a machine where
//! no server answers).

pub mod pg_cluster;
pub mod postgres;
