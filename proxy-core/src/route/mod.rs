//! Which site and location serve a request: Host routing, path normalisation, location
//! matching, and the local answers (returns, redirects, error pages) that end a request early.

mod host;
mod location;
mod path;

pub use host::{normalize_host, HostError, HostRouter};
pub use location::{
    Action, HostHeader, Location, LocationPattern, LocationTable, RedirectTarget, RedirectVars,
};
pub use path::{normalize_path, PathError};

use bytes::Bytes;

use crate::plugin::PluginList;
use std::collections::HashMap;

/// A site: the hosts it answers for, its locations, and its error pages.
#[derive(Debug)]
pub struct Site {
    /// The site's name from the config (`[sites.NAME]`); also its metrics label.
    pub name: String,
    /// Host patterns as configured (normalised to lowercase).
    pub hosts: Vec<String>,
    /// Locations, indexed for matching.
    pub locations: LocationTable,
    /// Largest request body accepted, in bytes; 0 means unlimited.
    pub max_body_size: u64,
    /// Error page bodies (HTML) by status, used for every error the proxy answers itself.
    pub error_pages: HashMap<u16, Bytes>,
    /// Plugins for every request of the site (run before the location's).
    pub plugins: PluginList,
}
