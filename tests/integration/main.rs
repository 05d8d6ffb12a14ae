//! Integration tests: the real binary, real SQLite files, a real Postgres.
//! One test binary (compiled once); each module is one capability.

mod support;

mod aws_backup;
mod aws_credentials;
mod aws_deploy;
mod aws_destroy;
mod aws_faults;
mod aws_hardening;
mod aws_network;
mod aws_operations;
mod aws_ownership;
mod aws_parameter;
mod aws_partition;
mod aws_plan;
mod builder;
mod cutover;
mod image;

mod changes;
mod cost;
mod crash;
mod dag;
mod deadlines;
mod for_each;
mod guarantees;
mod leases;
mod queue;
mod retries;
mod signals;
mod status;
mod store;
mod store_faults;
mod ui;
mod validate;
