//! What every pipeline of the worker and the operator functions share inside the database. Today: the one way to run
//! code a table's owner controls (`owner`).

pub mod owner;
