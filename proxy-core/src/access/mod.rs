//! Who may not use a site or a location: deny lists read from files (fail2ban-friendly,
//! reloaded on change), per-location allow lists, and user-agent deny rules.

mod deny_file;
mod ip_set;
mod user_agent;

pub(crate) use deny_file::{file_stamp, DenyList, FileStamp};
#[cfg(feature = "fuzzing")]
pub(crate) use ip_set::parse_ip_list;
pub(crate) use ip_set::{parse_net, IpSet};
pub(crate) use user_agent::UserAgentRules;

use bytes::Bytes;
use std::net::IpAddr;
use std::sync::Arc;

/// A site's access rules.
#[derive(Debug, Default)]
pub(crate) struct SiteAccess {
    deny_lists: Vec<Arc<DenyList>>,
    deny_body: Bytes,
    user_agents: Option<UserAgentRules>,
    user_agent_body: Bytes,
}

impl SiteAccess {
    /// Rules from deny lists and user-agent rules; refused user agents get
    /// `user_agent_body`, or `deny_body` when it is `None`.
    pub(crate) fn new(
        deny_lists: Vec<Arc<DenyList>>,
        user_agents: Option<UserAgentRules>,
        deny_body: Bytes,
        user_agent_body: Option<Bytes>,
    ) -> Self {
        Self {
            deny_lists,
            user_agent_body: user_agent_body.unwrap_or_else(|| deny_body.clone()),
            deny_body,
            user_agents,
        }
    }

    /// Whether any deny list or user-agent rule exists.
    pub(crate) fn has_rules(&self) -> bool {
        !self.deny_lists.is_empty() || self.user_agents.is_some()
    }

    /// Body of the 403 for denied clients (and locations' allow lists).
    pub(crate) fn deny_body(&self) -> &Bytes {
        &self.deny_body
    }

    /// Body of the 403 for refused user agents.
    pub(crate) fn user_agent_body(&self) -> &Bytes {
        &self.user_agent_body
    }

    /// Whether `ip` is on one of the deny lists.
    pub(crate) fn is_denied(&self, ip: IpAddr) -> bool {
        self.deny_lists.iter().any(|list| list.contains(ip))
    }

    /// Whether the `User-Agent` value is refused.
    pub(crate) fn is_denied_agent(&self, user_agent: &[u8]) -> bool {
        self.user_agents
            .as_ref()
            .is_some_and(|rules| rules.matches(user_agent))
    }
}
