//! Membership service providers: who is a member of which org, in which role.

mod role;

pub use role::Role;
pub use role::UnknownRole;
