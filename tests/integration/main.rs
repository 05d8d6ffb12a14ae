//! Integration tests: the real binary, real SQLite files, a real Postgres.
//! One test binary (compiled once); each module is one capability.

mod support;

mod aws_faults;
mod aws_full;
mod aws_network;
mod builder;
mod cutover;
mod faults;
mod image;

mod changes;
mod cost;
mod crash;
mod dag;
mod deadlines;
mod for_each;
mod guarantees;
mod leases;
mod retries;
mod signals;
mod status;
mod store;
mod store_faults;
mod validate;
